"""`selfden train --init-from RUN`: a new run starts from another run's networks, and says so.

Fine-tuning, not resuming: the networks come from the source's checkpoint; the optimiser, data,
normalisation and budget are the new run's. A source that is not a run of the same method and
options, or whose checkpoint changed after planning, is one error line and leaves nothing behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from selfden.errors import InputError
from selfden.methods import get_method
from selfden.normalisation import Normalisation
from selfden.package.files import sha256_of
from selfden.runs.plan import new_run_config
from selfden.runs.train import train_run
from test_hostile_runs import TRAIN, data, one_error_line, run_selfden  # noqa: F401 (data is a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Small networks of each method (warm starting is the same at any size).
SMALL = {
    "cae": dict(widths=(4, 4, 8, 8), residual_blocks=1, residual_width=8, bottleneck=2),
    "cosdd": dict(size="tiny", levels=4, features=8, latent_channels=4, components=3, downsamplings=2, direction="x"),
    "dnnet": dict(filters=8, noise_net_width=16, noise_model="gmm"),
    "noise2atom": dict(widths=(4, 8, 8, 16), residual_blocks=1, residual_width=16, critic_widths=(4, 8, 8, 16)),
}


def build(name: str, seed: int):
    torch.manual_seed(seed)
    cls = get_method(name)
    return cls(cls.config_class(**SMALL[name]), Normalisation(0.0, 1.0), torch.device("cpu"))


def exported_outputs(method, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each exported graph's output on ``x`` (or on its own example inputs, drawn from torch's seed), flattened."""
    outputs = {}
    with torch.no_grad():
        for name, graph in method.export_graphs().items():
            inputs = graph.example_inputs(1, 32, 32) if hasattr(graph, "example_inputs") else (x,)
            out = graph.eval()(*inputs)
            outputs[name] = torch.cat([t.flatten() for t in (out if isinstance(out, tuple) else (out,))])
    return outputs


def optimiser_moments(state: object) -> list[object]:
    """Every optimiser's per-parameter state (Adam's moments) anywhere in a method's state_dict."""
    found = []
    if isinstance(state, dict):
        if "state" in state and "param_groups" in state:
            found.extend(state["state"].values())
        else:
            for value in state.values():
                found.extend(optimiser_moments(value))
    return found


@pytest.mark.parametrize("name", sorted(SMALL))
def test_warm_start_takes_every_exported_network_and_keeps_the_fresh_optimiser(name: str) -> None:
    source, target = build(name, seed=0), build(name, seed=1)
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    wanted = exported_outputs(source, x)
    torch.manual_seed(3)
    before = exported_outputs(target, x)
    assert any(not torch.equal(before[k], wanted[k]) for k in wanted), "two seeds gave the same networks"

    target.warm_start(source.state_dict())

    torch.manual_seed(3)
    got = exported_outputs(target, x)
    for graph in wanted:
        torch.testing.assert_close(got[graph], wanted[graph], rtol=0, atol=0, msg=f"{name} {graph}")
    assert optimiser_moments(target.state_dict()) == [], "the optimiser must start fresh"


@pytest.fixture(scope="module")
def source_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    run = tmp_path_factory.mktemp("warm") / "source"
    done = run_selfden("train", "cae", data, "-o", run, "--steps", "2", *TRAIN)
    assert done.returncode == 0, done.stdout + done.stderr
    return run


def test_a_run_started_from_another_records_its_checkpoint_and_hash(
    source_run: Path, data: Path, tmp_path: Path  # noqa: F811
) -> None:
    run = tmp_path / "tuned"
    done = run_selfden("train", "cae", data, "-o", run, "--steps", "2", *TRAIN, "--init-from", source_run)
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = yaml.safe_load((run / "config.yaml").read_text())["init_from"]
    checkpoint = source_run / "checkpoints" / "best.pt"
    assert recorded == {"checkpoint": str(checkpoint.resolve()), "sha256": sha256_of(checkpoint), "step": 2}
    assert (run / "model" / "rdf.yaml").is_file()


def test_a_fresh_run_writes_no_init_from_key(source_run: Path) -> None:
    assert "init_from" not in yaml.safe_load((source_run / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["cae", "--set", "bottleneck=3"], "networks do not fit this run's"),
        (["dnnet"], "needs a run of dnnet, but it trained cae"),
    ],
)
def test_a_source_of_other_networks_is_one_error_line_and_no_run_folder(
    source_run: Path, data: Path, tmp_path: Path, options: list[str], says: str  # noqa: F811
) -> None:
    method, *extra = options
    run = tmp_path / "tuned"
    crops = TRAIN if method == "cae" else ["--patch-size", "16", "--batch-size", "2"]
    done = run_selfden("train", method, data, "-o", run, "--steps", "2", *crops, *extra, "--init-from", source_run)
    assert done.returncode != 0
    one_error_line(done.stderr)
    assert says in done.stderr and "--init-from" in done.stderr
    assert not run.exists()


def test_init_from_with_resume_or_a_missing_folder_is_refused(source_run: Path, data: Path, tmp_path: Path) -> None:  # noqa: F811
    resumed = run_selfden("train", "cae", "-o", source_run, "--resume", "--steps", "3", "--init-from", source_run)
    missing = run_selfden("train", "cae", data, "-o", tmp_path / "r", *TRAIN, "--init-from", tmp_path / "nowhere")
    for done, says in ((resumed, "--init-from starts a new run"), (missing, "not a selfden run folder")):
        assert done.returncode != 0
        one_error_line(done.stderr)
        assert says in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_source_checkpoint_changed_after_planning_is_refused_before_the_run_folder_exists(
    source_run: Path, data: Path, tmp_path: Path  # noqa: F811
) -> None:
    source = tmp_path / "source"
    shutil.copytree(source_run, source)
    config = new_run_config(
        "cae", [data], dict(widths=[4, 4, 4], residual_blocks=1, residual_width=4, bottleneck=2, halo=8),
        {"patch_size": 16, "batch_size": 2}, {"max_steps": 2, "device": "cpu"}, seed=1, init_from=source,
    )
    (source / "checkpoints" / "best.pt").write_bytes((source / "checkpoints" / "last.pt").read_bytes() + b"x")
    with pytest.raises(InputError, match="changed since this run was planned"):
        train_run(config, tmp_path / "tuned")
    assert not (tmp_path / "tuned").exists()
