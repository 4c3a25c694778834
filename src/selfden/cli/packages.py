"""``selfden export`` and ``selfden validate``: write a run's bioimage.io package, check any package."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from selfden.cli.shell import out, require_training_extra, user_errors


def export(
    run: Path = typer.Argument(..., help="Run folder made by `selfden train`."),
    output: Path = typer.Option(..., "--output", "-o", help="Package folder to write (or a .zip)."),
    validation: list[str] = typer.Option(
        [], "--validation", help="A measured result for the README's Validation section (repeatable)."
    ),
    author: list[str] = typer.Option([], "--author", help="An author's name (repeatable; a person, not software)."),
    github_user: list[str] = typer.Option(
        [], "--github-user", help="The GitHub user of the --author given just before (repeatable, in order)."
    ),
    maintainer: list[str] = typer.Option([], "--maintainer", metavar="GITHUB_USER", help="A maintainer's GitHub user (repeatable)."),
    git_repo: Optional[str] = typer.Option(None, "--git-repo", metavar="URL", help="https URL of the source repository."),
    name: Optional[str] = typer.Option(None, "--name", help="Package name: what the model is for."),
    description: Optional[str] = typer.Option(None, "--description", help="One or two sentences: modality, noise, sample."),
    tag: list[str] = typer.Option([], "--tag", help="An extra tag, e.g. the imaging modality (repeatable)."),
    training_data: Optional[str] = typer.Option(
        None, "--training-data", help="The README's 'Training data' section: what the frames are, their origin and licence."
    ),
    metadata: Optional[Path] = typer.Option(
        None, "--metadata", metavar="FILE.yaml", help="The same as YAML (name, description, authors, maintainers, "
        "git_repo, tags, training_data); options given here override it.",
    ),
) -> None:
    """Export a run as a bioimage.io package (ONNX weights) for selfden infer, Fiji and deepImageJ."""
    with user_errors():
        require_training_extra("export")
        from selfden.export.metadata import PackageMetadata, load_metadata, metadata_from_options
        from selfden.runs.export import export_run

        given = metadata_from_options(author, github_user, maintainer, git_repo, name, description, tag, training_data)
        described = (load_metadata(metadata) if metadata is not None else PackageMetadata()).merged(given)
        written = export_run(run, output, validation=validation, metadata=described)
        out.print(f"wrote {written}")


def validate(
    package: Path = typer.Argument(..., help="Package folder, its rdf.yaml or a .zip."),
    trust_code: bool = typer.Option(
        False, "--trust-code",
        help="Also run bioimageio.core's PyTorch test, which imports the package's architecture.py "
        "(its author's Python code). Only for packages you trust; off by default.",
    ),
) -> None:
    """Check a bioimage.io package: format, bioimageio.core's test, deepImageJ's limits, upload rules."""
    with user_errors():
        from selfden.export.validation import validate_package

        report = validate_package(package, trust_code=trust_code)
        out.print(report.format(), markup=False, highlight=False, soft_wrap=True)
        if not report.passed:
            raise typer.Exit(1)
