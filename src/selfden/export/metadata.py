"""Who made a package and what it is for: the metadata a zoo reviewer reads first.

Given on the command line (``selfden export --author … --maintainer … --git-repo …``) or in a
YAML file (``--metadata FILE``, the same keys); validated here, at the edge, so a typo is one
line naming the key. No torch, no bioimageio: ``package_rdf`` turns it into the rdf.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from selfden.errors import SelfdenError, one_line

#: Written when no author is given: honest, and ``selfden validate`` flags it before an upload.
UNKNOWN_AUTHOR = "Unknown author (set with selfden export --author)"
#: The software citation every package carries (CITATION.cff at the repository's root).
SELFDEN_CITATION = "selfden: self-supervised denoising from noisy images alone (software). See CITATION.cff."


class Person(BaseModel):
    """An author or maintainer as bioimage.io describes one."""

    model_config = ConfigDict(extra="forbid")
    name: Optional[str] = None
    github_user: Optional[str] = None
    affiliation: Optional[str] = None
    orcid: Optional[str] = None
    email: Optional[str] = None


class PackageMetadata(BaseModel):
    """What a package says about itself beyond the model: names, people, purpose, data."""

    model_config = ConfigDict(extra="forbid")
    name: Optional[str] = Field(None, max_length=128, description="Package name (what the model is for).")
    description: Optional[str] = Field(None, max_length=1024, description="One or two sentences.")
    authors: list[Person] = Field(default_factory=list)
    maintainers: list[Person] = Field(default_factory=list, description="Need a github_user each (the zoo's rule).")
    git_repo: Optional[str] = Field(None, description="https URL of the source repository.")
    tags: list[str] = Field(default_factory=list, description="Extra tags: imaging modality, noise kind, sample.")
    training_data: Optional[str] = Field(None, description="The README's 'Training data' section: what, where from, licence.")

    @field_validator("name")
    @classmethod
    def _zoo_name(cls, name: Optional[str]) -> Optional[str]:
        if name is not None and (bad := sorted(set(re.sub(r"[A-Za-z0-9_+\- ()]", "", name)))):
            raise ValueError(f"{name!r} has {''.join(bad)!r}; bioimage.io names use letters, digits, spaces and _+-()")
        return name

    @field_validator("authors")
    @classmethod
    def _authors_have_names(cls, people: list[Person]) -> list[Person]:
        if any(not p.name for p in people):
            raise ValueError("every author needs a name")
        return people

    @field_validator("maintainers")
    @classmethod
    def _maintainers_have_github_users(cls, people: list[Person]) -> list[Person]:
        if any(not p.github_user for p in people):
            raise ValueError("every maintainer needs a github_user (bioimage.io reaches maintainers there)")
        return people

    @field_validator("git_repo")
    @classmethod
    def _https(cls, url: Optional[str]) -> Optional[str]:
        if url is not None and not url.startswith("https://"):
            raise ValueError(f"{url!r} is not an https:// URL")
        return url

    @property
    def github_users(self) -> list[str]:
        return [str(p.github_user) for p in (*self.authors, *self.maintainers) if p.github_user]

    def merged(self, override: PackageMetadata) -> PackageMetadata:
        """These values, with every field ``override`` sets replacing ours."""
        return PackageMetadata.model_validate(
            {**self.model_dump(exclude_unset=True), **override.model_dump(exclude_unset=True)}
        )


def metadata_from_options(
    authors: list[str], github_users: list[str], maintainers: list[str], git_repo: Optional[str],
    name: Optional[str], description: Optional[str], tags: list[str], training_data: Optional[str],
) -> PackageMetadata:
    """The export command's options: ``--github-user`` values pair with ``--author`` values in order."""
    if len(github_users) > len(authors):
        raise SelfdenError(
            f"{len(github_users)} --github-user for {len(authors)} --author: give each --github-user after its --author"
        )
    people = [{"name": a, **({"github_user": g} if g else {})} for a, g in zip(authors, [*github_users, *[None] * len(authors)])]
    values = {"authors": people, "maintainers": [{"github_user": m} for m in maintainers], "git_repo": git_repo,
              "name": name, "description": description, "tags": tags, "training_data": training_data}
    return _validated({k: v for k, v in values.items() if v not in (None, [])}, "selfden export options")


def load_metadata(path: Path) -> PackageMetadata:
    """A ``--metadata`` YAML file (the keys of PackageMetadata), one-line SelfdenError when it is wrong."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SelfdenError(f"{path}: cannot read the package metadata ({one_line(error)}); fix the YAML") from error
    if not isinstance(values, dict):
        raise SelfdenError(f"{path}: package metadata must be a YAML mapping (name:, authors:, …)")
    return _validated(values, str(path))


def _validated(values: dict[str, object], where: str) -> PackageMetadata:
    try:
        return PackageMetadata.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'metadata'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        raise SelfdenError(f"{where}: {problems}; the keys are {', '.join(PackageMetadata.model_fields)}") from None
