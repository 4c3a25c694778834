"""``python -m selfden.cli``: the ``selfden`` command."""

from selfden.cli import run

run()
