"""What a package says about itself: authors and maintainers (GitHub users kept out of the
offline self-test), the repository, names and tags, the training data, and a labelled cover
made from real pixels at an aspect the zoo accepts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from selfden.errors import SelfdenError
from selfden.export.cover import COVER_SIDE, square_crop, write_cover
from selfden.export.metadata import UNKNOWN_AUTHOR, PackageMetadata, load_metadata, metadata_from_options
from selfden.export.package import export_package
from selfden.methods.base import Normalisation
from selfden.methods.cae import Cae, CaeConfig

TINY = dict(widths=(4, 4, 8, 8, 8, 8), residual_blocks=1, residual_width=8, bottleneck=2, halo=32)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def options(**given: object) -> PackageMetadata:
    values = {"authors": [], "github_users": [], "maintainers": [], "git_repo": None, "name": None,
              "description": None, "tags": [], "training_data": None, **given}
    return metadata_from_options(**values)  # type: ignore[arg-type]


def test_github_users_pair_with_the_authors_given_before_them() -> None:
    meta = options(authors=["Ada Lovelace", "Alan Turing"], github_users=["ada"])
    assert [(p.name, p.github_user) for p in meta.authors] == [("Ada Lovelace", "ada"), ("Alan Turing", None)]
    with pytest.raises(SelfdenError, match="give each --github-user after its --author"):
        options(authors=["Ada Lovelace"], github_users=["ada", "alan"])


def test_metadata_mistakes_are_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(SelfdenError, match=r"git_repo: .*not an https:// URL"):
        options(git_repo="git@github.com:x/y.git")
    with pytest.raises(SelfdenError, match=r"name: .*':'.*letters, digits"):
        options(name="STEM: atoms")
    path = tmp_path / "meta.yaml"
    path.write_text("name: STEM denoiser\nauthor: Ada\n")
    with pytest.raises(SelfdenError) as error:
        load_metadata(path)
    assert "author" in str(error.value) and "\n" not in str(error.value)
    path.write_text("maintainers:\n  - name: Ada\n")
    with pytest.raises(SelfdenError, match="every maintainer needs a github_user"):
        load_metadata(path)


def test_options_override_the_metadata_file(tmp_path: Path) -> None:
    path = tmp_path / "meta.yaml"
    path.write_text("name: From the file\ntags: [stem]\nauthors:\n  - name: Ada Lovelace\n    github_user: ada\n")
    merged = load_metadata(path).merged(options(name="From the option"))
    assert merged.name == "From the option" and merged.tags == ["stem"] and merged.authors[0].github_user == "ada"


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(tmp_path_factory.mktemp("bioimageio-cache")))
    torch.manual_seed(0)
    method = Cae(CaeConfig(**TINY), Normalisation(400.0, 200.0), torch.device("cpu"))
    raw = np.random.default_rng(0).normal(500.0, 50.0, (90, 120)).astype(np.float32)  # smaller than the min tile
    meta = PackageMetadata.model_validate({
        "name": "Demo HAADF STEM atoms (synthetic)", "description": "A demo trained on simulated atoms.",
        "authors": [{"name": "Ada Lovelace", "github_user": "ada"}], "maintainers": [{"github_user": "ada"}],
        "git_repo": "https://example.org/selfden", "tags": ["stem", "shot-noise"],
        "training_data": "Simulated Pt atoms with Poisson noise.",
    })
    folder = export_package(method, tmp_path_factory.mktemp("pkg") / "model", raw, {"inputs": ["atoms.tif"]}, metadata=meta)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    return rdf, (folder / "README.md").read_text(), folder


def test_exported_rdf_names_people_repository_and_purpose(described: tuple[dict, str, Path]) -> None:
    rdf, _, _ = described  # exporting at all means the offline self-test passed despite the GitHub users
    assert rdf["authors"] == [{"name": "Ada Lovelace", "github_user": "ada"}]
    assert rdf["maintainers"] == [{"github_user": "ada"}]
    assert rdf["git_repo"] == "https://example.org/selfden"
    assert rdf["name"] == "Demo HAADF STEM atoms (synthetic)"
    assert {"stem", "shot-noise", "denoising", "cae"} <= set(rdf["tags"])


def test_readme_describes_the_training_data_and_cites_selfden(described: tuple[dict, str, Path]) -> None:
    _, readme, _ = described
    training = readme.split("## Training data", 1)[1].split("##", 1)[0]
    assert "Simulated Pt atoms with Poisson noise." in training and "atoms.tif" in training
    assert "CITATION.cff" in readme


def test_cover_is_two_to_one_labelled_and_shows_the_frame_at_its_real_size(described: tuple[dict, str, Path]) -> None:
    _, _, folder = described
    with Image.open(folder / "cover.png") as cover:
        assert cover.width == 2 * cover.height and cover.height >= COVER_SIDE
        pixels = np.asarray(cover.convert("L"), dtype=np.float32)
    assert (folder / "cover.png").stat().st_size < 500_000
    # 90 px of real frame enlarged by a whole factor (3): no mirror-padded copy of it anywhere
    factor = cover.height // 90
    assert cover.height == 90 * factor
    left = pixels[20 * factor :, : cover.height]  # below the label
    assert not np.array_equal(left[:, : 10 * factor], np.flip(left[:, -10 * factor :], axis=1))


def test_cover_labels_are_drawn_on_both_halves(tmp_path: Path) -> None:
    noisy = np.random.default_rng(1).normal(0, 1, (256, 256)).astype(np.float32)
    write_cover(tmp_path / "c.png", noisy, noisy * 0, "dnnet")
    with Image.open(tmp_path / "c.png") as cover:
        label = np.asarray(cover.convert("L"))[:16]
    assert (label[:, :40] > 200).any() and (label[:, 256:296] > 200).any(), "white label text on both halves"


def test_square_crop_keeps_real_pixels_only() -> None:
    frame = np.arange(50 * 80, dtype=np.float32).reshape(50, 80)
    crop = square_crop(frame)
    assert crop.shape == (50, 50) and np.array_equal(crop, frame[:, 15:65])


def test_an_export_without_authors_says_so_and_validate_flags_it(tmp_path: Path) -> None:
    from selfden.export.validation import validate_package

    os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "cache"))
    torch.manual_seed(0)
    method = Cae(CaeConfig(**TINY), Normalisation(0.0, 1.0), torch.device("cpu"))
    raw = np.random.default_rng(2).normal(0.0, 1.0, (128, 128)).astype(np.float32)
    folder = export_package(method, tmp_path / "model", raw, {})
    assert yaml.safe_load((folder / "rdf.yaml").read_text())["authors"] == [{"name": UNKNOWN_AUTHOR}]
    check = validate_package(folder).check("authors named")
    assert check.warning and not check.passed and "--author" in check.detail
