"""``python -m selfden``: the ``selfden`` command, for environments whose scripts are not on PATH."""

from selfden.cli import run

run()
