"""The generic trainer, driven by a toy method: a 3×3 convolution learning to blur its input."""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

from selfden.errors import SelfdenError
from selfden.training.checkpoint import save_checkpoint
from selfden.training import (
    ProgressState,
    RichProgress,
    TrainerConfig,
    TrainingDiverged,
    load_checkpoint,
    resolve_device,
    train,
)
from selfden.training.device import cpu_has_native_bf16, uses_bf16
from toy_method import ToyBlur, ToyConfig

BATCH_SHAPE = (4, 1, 16, 16)


class InstrumentedToyBlur(ToyBlur):
    """The toy method with hooks to interrupt, diverge or slow down, and records of what it saw."""

    def __init__(
        self,
        config: ToyConfig | None = None,
        *,
        interrupt_at: int | None = None,
        signal_at: int | None = None,
        signals: tuple[signal.Signals, ...] = (),
        nan_at: int | None = None,
        step_seconds: float = 0.0,
        val_seconds: float = 0.0,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__(config, seed=seed, device=device)
        self.interrupt_at, self.nan_at, self.step_seconds = interrupt_at, nan_at, step_seconds
        self.signal_at, self.signals = signal_at, signals
        self.val_seconds = val_seconds
        self.calls = 0
        self.autocast_in_training: set[bool] = set()
        self.optimizer_state_at_first_step: dict[str, Any] | None = None

    def training_step(self, batch: torch.Tensor) -> dict[str, float]:
        self.calls += 1
        if self.calls == 1:
            self.optimizer_state_at_first_step = copy.deepcopy(self.opt.state_dict())
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        if self.calls == self.signal_at:  # as if the user pressed Ctrl-C (or a scheduler sent SIGTERM) mid-step
            for signum in self.signals:
                os.kill(os.getpid(), signum)
        self.autocast_in_training.add(torch.is_autocast_enabled(self.device.type))
        if self.step_seconds:
            time.sleep(self.step_seconds)
        metrics = super().training_step(batch)
        if self.calls == self.nan_at:
            return {"loss": float("nan")}
        return {**metrics, "weight_mean": self.net.weight.mean().item()}

    def validation_step(self, batch: torch.Tensor) -> dict[str, float]:
        if self.val_seconds:
            time.sleep(self.val_seconds)
        return super().validation_step(batch)


def _config(**overrides: Any) -> TrainerConfig:
    settings: dict[str, Any] = dict(
        max_steps=10, val_every_steps=5, log_every_steps=1, device="cpu", write_report=False
    )
    settings.update(overrides)
    return TrainerConfig(**settings)


def _sampler(seed: int = 1) -> tuple[np.random.Generator, Any]:
    rng = np.random.default_rng(seed)
    return rng, lambda: rng.normal(size=BATCH_SHAPE).astype(np.float32)


def _val_batches() -> list[np.ndarray]:
    rng = np.random.default_rng(99)
    return [rng.normal(size=BATCH_SHAPE).astype(np.float32) for _ in range(2)]


def _train(method: ToyBlur, run_dir: Path, config: TrainerConfig, **kwargs: Any):
    rng, next_batch = kwargs.pop("sampler", _sampler())
    return train(method, next_batch, _val_batches(), run_dir, config, data_rng=rng, **kwargs)


def _records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_training_lowers_validation_loss(tmp_path: Path) -> None:
    result = _train(InstrumentedToyBlur(), tmp_path, _config(max_steps=30, val_every_steps=10))
    val_losses = [r["val_loss"] for r in _records(tmp_path, "val")]
    assert val_losses[-1] < 0.3 * val_losses[0], val_losses
    assert result.best_val_loss == min(val_losses), (result.best_val_loss, val_losses)
    assert result.steps == 30 and result.stop_reason == "max_steps" and not result.interrupted
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def test_resume_continues_step_count_and_optimizer_state(tmp_path: Path) -> None:
    first = InstrumentedToyBlur()
    before = _train(first, tmp_path, _config(max_steps=5))
    saved_optimizer = copy.deepcopy(first.opt.state_dict())

    second = InstrumentedToyBlur(seed=123)  # different initial weights: everything must come from last.pt
    after = _train(second, tmp_path, _config(max_steps=10), resume=True)

    assert second.calls == 5 and after.steps == 10, (second.calls, after.steps)
    assert after.elapsed_seconds > before.elapsed_seconds
    loaded = second.optimizer_state_at_first_step
    assert loaded is not None
    for index, saved in saved_optimizer["state"].items():
        resumed = loaded["state"][index]
        assert int(resumed["step"]) == int(saved["step"]) == 5, (resumed["step"], saved["step"])
        assert torch.equal(resumed["exp_avg"], saved["exp_avg"])
        assert torch.equal(resumed["exp_avg_sq"], saved["exp_avg_sq"])
    train_steps = [r["step"] for r in _records(tmp_path, "train")]
    assert train_steps == list(range(1, 11)), train_steps


def test_resumed_run_matches_uninterrupted_run(tmp_path: Path) -> None:
    straight = InstrumentedToyBlur()
    _train(straight, tmp_path / "straight", _config(max_steps=10), sampler=_sampler())

    split = InstrumentedToyBlur()
    sampler = _sampler()
    _train(split, tmp_path / "split", _config(max_steps=4), sampler=sampler)
    split = InstrumentedToyBlur(seed=7)
    _train(split, tmp_path / "split", _config(max_steps=10), resume=True, sampler=_sampler(seed=555))

    # the data Generator's state came from the checkpoint, so both runs saw the same crops
    assert torch.allclose(split.net.weight, straight.net.weight, atol=1e-6), (split.net.weight, straight.net.weight)


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    _train(InstrumentedToyBlur(), tmp_path, _config(max_steps=3))
    for name in ("last.pt", "best.pt"):
        checkpoint = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert {"step", "elapsed_seconds", "best_val_loss", "method", "rng"} <= set(checkpoint), sorted(checkpoint)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["step"] == 3 and isinstance(last["rng"]["numpy"]["key"], list)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt"], f"temporary files left behind: {names}"


def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):
        save_checkpoint({"step": 2, "unpicklable": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], list(tmp_path.iterdir())


def test_resume_without_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SelfdenError, match="does not exist; train without resuming"):
        _train(InstrumentedToyBlur(), tmp_path, _config(), resume=True)


def test_resume_falls_back_to_best_when_last_is_truncated(tmp_path: Path) -> None:
    _train(InstrumentedToyBlur(), tmp_path, _config(max_steps=5, val_every_steps=5))
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    result = _train(InstrumentedToyBlur(seed=9), tmp_path, _config(max_steps=8), resume=True)
    assert result.steps == 8 and load_checkpoint(last)["step"] == 8, result


def test_resume_with_no_readable_checkpoint_names_the_folder_to_delete(tmp_path: Path) -> None:
    _train(InstrumentedToyBlur(), tmp_path, _config(max_steps=5, val_every_steps=5))
    for name in ("last.pt", "best.pt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"\0" * 64)
    with pytest.raises(SelfdenError, match=f"delete {tmp_path / 'checkpoints'} and train with --resume"):
        _train(InstrumentedToyBlur(), tmp_path, _config(max_steps=8), resume=True)


def test_untrained_baseline_never_becomes_best_pt(tmp_path: Path) -> None:
    # frozen weights: every validation ties the baseline, so only a rule can keep step 0 out of best.pt
    _train(InstrumentedToyBlur(ToyConfig(lr=0.0)), tmp_path, _config(max_steps=2, val_every_steps=1))
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 1


def test_first_checkpoint_is_written_at_the_first_validation(tmp_path: Path) -> None:
    config = _config(max_steps=10, val_every_steps=3, checkpoint_every_minutes=5)
    with pytest.raises(TrainingDiverged, match=r"last good checkpoint .*\(step 3\) is kept"):
        _train(InstrumentedToyBlur(nan_at=5), tmp_path, config)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3


def test_time_budget_stops_training(tmp_path: Path) -> None:
    config = _config(max_steps=None, max_minutes=0.01, val_every_steps=10**6, val_every_seconds=0.1)
    result = _train(InstrumentedToyBlur(step_seconds=0.05), tmp_path, config)
    assert result.stop_reason == "max_minutes", result
    # the budget is checked between steps, so it ends within a step (and a validation) of 0.6 s
    assert 0.6 <= result.elapsed_seconds < 3.0, result.elapsed_seconds
    val_steps = [r["step"] for r in _records(tmp_path, "val")]
    # baseline, at least one time-triggered validation, and the final one
    assert len(val_steps) >= 3 and val_steps[0] == 0 and val_steps[-1] == result.steps, val_steps


def test_a_slow_validation_is_spaced_out_to_a_small_share_of_the_time(tmp_path: Path) -> None:
    # a validation costs ~5 steps (0.1 s); a clock cadence of 0.01 s would otherwise validate after every step
    config = _config(max_steps=None, max_minutes=0.06, val_every_steps=10**6, val_every_seconds=0.01)
    result = _train(InstrumentedToyBlur(step_seconds=0.02, val_seconds=0.1 / len(_val_batches())), tmp_path, config)
    timed = [r for r in _records(tmp_path, "val") if 0 < r["step"] < result.steps]  # not the baseline or the end
    assert 1 <= len(timed) <= 2, [r["step"] for r in timed]
    assert sum(r["val_seconds"] for r in timed) < 0.15 * result.elapsed_seconds


def test_keyboard_interrupt_saves_checkpoint(tmp_path: Path) -> None:
    result = _train(InstrumentedToyBlur(interrupt_at=7), tmp_path, _config(max_steps=50))
    assert result.interrupted and result.stop_reason == "interrupted", result
    assert result.steps == 6, result.steps
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 6


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_stop_signal_mid_step_ends_the_training_after_that_step(signum: signal.Signals, tmp_path: Path) -> None:
    method = InstrumentedToyBlur(signal_at=7, signals=(signum,))
    result = _train(method, tmp_path, _config(max_steps=50))
    assert result.interrupted and result.stop_reason == "interrupted", result
    assert result.steps == 7 and method.calls == 7, (result.steps, method.calls)  # the step finished, no more began
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert saved["step"] == 7
    # the saved weights are those of 7 whole steps: the same as a run told to stop at 7
    seven = _train(InstrumentedToyBlur(), tmp_path / "seven", _config(max_steps=7))
    assert seven.steps == 7
    torch.testing.assert_close(saved["method"], load_checkpoint(tmp_path / "seven" / "checkpoints" / "last.pt")["method"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the trainer's handlers are gone


def test_a_second_ctrl_c_stops_at_once_without_finishing_the_step(tmp_path: Path) -> None:
    method = InstrumentedToyBlur(signal_at=7, signals=(signal.SIGINT, signal.SIGINT))
    result = _train(method, tmp_path, _config(max_steps=50))
    assert result.interrupted and result.steps == 6, result
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 6


def test_a_training_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as nohup and background jobs start a process
    try:
        result = _train(InstrumentedToyBlur(signal_at=3, signals=(signal.SIGINT,)), tmp_path, _config(max_steps=10))
        assert not result.interrupted and result.steps == 10, result
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_metrics_jsonl_has_train_and_val_lines(tmp_path: Path) -> None:
    _train(InstrumentedToyBlur(), tmp_path, _config(max_steps=20, log_every_steps=5, val_every_steps=10))
    train_lines, val_lines = _records(tmp_path, "train"), _records(tmp_path, "val")
    assert [r["step"] for r in train_lines] == [5, 10, 15, 20], train_lines
    assert [r["step"] for r in val_lines] == [0, 10, 20], val_lines
    assert all({"elapsed_seconds", "loss", "weight_mean"} <= set(r) for r in train_lines), train_lines
    assert all("val_loss" in r and r["elapsed_seconds"] >= 0 for r in val_lines), val_lines


def test_report_png_written(tmp_path: Path) -> None:
    result = _train(InstrumentedToyBlur(), tmp_path, _config(write_report=True))
    report = tmp_path / "report.png"
    assert result.report_written and report.is_file()
    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.stat().st_size > 20_000, report.stat().st_size


def test_method_diagnostic_figures_are_written_beside_the_report(tmp_path: Path) -> None:
    class WithFigure(ToyBlur):
        def diagnostic_figures(self, val_batches, out_dir: Path) -> list[Path]:
            path = Path(out_dir) / "diagnostic.txt"
            path.write_text(f"{len(val_batches)} validation batches")
            return [path]

    _train(WithFigure(), tmp_path, _config(write_report=True))
    assert (tmp_path / "diagnostic.txt").read_text() == f"{len(_val_batches())} validation batches"


def test_nonfinite_loss_stops_with_clear_error(tmp_path: Path) -> None:
    config = _config(max_steps=50, checkpoint_every_minutes=0)
    with pytest.raises(TrainingDiverged, match=r"diverged: loss became nan at step 4 .*step 3\) is kept"):
        _train(InstrumentedToyBlur(nan_at=4), tmp_path, config)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3


def test_early_stopping_after_patience_validations(tmp_path: Path) -> None:
    config = _config(max_steps=50, val_every_steps=1, early_stopping_patience=2)
    result = _train(InstrumentedToyBlur(ToyConfig(lr=0.0)), tmp_path, config)  # frozen weights never improve
    # step 1 is the first best (the untrained baseline never is); steps 2 and 3 exhaust the patience
    assert result.stop_reason == "early_stopping" and result.steps == 3, result


class ToyPreferringBf16(ToyConfig):
    def cpu_bf16_pays(self) -> bool:
        return True


def test_bf16_autocast_on_cpu_only_when_asked_or_the_method_prefers_it_on_native_bf16(tmp_path: Path) -> None:
    default, asked = InstrumentedToyBlur(), InstrumentedToyBlur()
    _train(default, tmp_path / "default", _config(max_steps=2))
    _train(asked, tmp_path / "asked", _config(max_steps=2, bf16_on_cpu=True))
    assert default.autocast_in_training == {False} and asked.autocast_in_training == {True}

    preferring, refused = InstrumentedToyBlur(ToyPreferringBf16()), InstrumentedToyBlur(ToyPreferringBf16())
    _train(preferring, tmp_path / "preferring", _config(max_steps=2))
    _train(refused, tmp_path / "refused", _config(max_steps=2, bf16_on_cpu=False))
    assert preferring.autocast_in_training == {cpu_has_native_bf16()}
    assert refused.autocast_in_training == {False}


def test_a_method_preferring_bf16_trains_in_float32_where_the_cpu_only_emulates_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert not cpu_has_native_bf16()
    assert not uses_bf16(torch.device("cpu"), _config(max_steps=1), method_prefers_bf16=True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert uses_bf16(torch.device("cpu"), _config(max_steps=1), method_prefers_bf16=True)


def test_dnnet_prefers_bf16_and_cosdd_does_not() -> None:
    # dnnet's U-Net steps ran 2.1x faster in bf16 (DnnetConfig.cpu_bf16_pays); cosdd keeps float32 until its
    # bf16 speed and quality per minute are measured on today's code
    from selfden.methods import get_method

    assert get_method("dnnet").config_class().cpu_bf16_pays()
    assert not get_method("cosdd").config_class().cpu_bf16_pays()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_uses_bf16_autocast(tmp_path: Path) -> None:
    method = InstrumentedToyBlur(device="cuda")
    result = _train(method, tmp_path, _config(max_steps=20, device="auto"))
    assert method.autocast_in_training == {torch.cuda.is_bf16_supported()}
    assert result.best_val_loss is not None and result.best_val_loss < 0.1, result


class RecordingProgress:
    def __init__(self) -> None:
        self.events: list[tuple[str, ProgressState]] = []

    def start(self, state: ProgressState) -> None:
        self.events.append(("start", state))

    def update(self, state: ProgressState) -> None:
        self.events.append(("update", state))

    def finish(self, state: ProgressState) -> None:
        self.events.append(("finish", state))


def test_method_hears_the_budget_fraction_before_every_step(tmp_path: Path) -> None:
    class Listening(ToyBlur):
        def __init__(self) -> None:
            super().__init__()
            self.heard: list[float] = []

        def on_budget_progress(self, fraction: float) -> None:
            self.heard.append(fraction)

    method = Listening()
    _train(method, tmp_path, _config(max_steps=10))
    assert method.heard == pytest.approx([step / 10 for step in range(10)])


def test_progress_reporter_sees_every_step(tmp_path: Path) -> None:
    progress = RecordingProgress()
    _train(InstrumentedToyBlur(), tmp_path, _config(max_steps=8), progress=progress)
    kinds = [kind for kind, _ in progress.events]
    assert kinds == ["start"] + ["update"] * 8 + ["finish"], kinds
    final = progress.events[-1][1]
    assert final.step == 8 and final.fraction == 1.0 and "loss" in final.train and "val_loss" in final.val


def test_eta_follows_whichever_budget_ends_first() -> None:
    by_steps = ProgressState(step=50, elapsed_seconds=10, max_steps=100, max_seconds=600, steps_per_second=10)
    by_time = ProgressState(step=50, elapsed_seconds=10, max_steps=100, max_seconds=12, steps_per_second=10)
    assert by_steps.eta_seconds == pytest.approx(5.0) and by_steps.fraction == pytest.approx(0.5)
    assert by_time.eta_seconds == pytest.approx(2.0) and by_time.fraction == pytest.approx(10 / 12)


def test_rich_progress_shows_step_losses_and_eta() -> None:
    output = io.StringIO()
    bar = RichProgress(console=Console(file=output, width=200, force_terminal=False))
    state = ProgressState(step=50, elapsed_seconds=62, max_steps=100, max_seconds=900, steps_per_second=1.0,
                          train={"loss": 0.0123}, val={"val_loss": 0.0145})
    assert bar.status(state) == "step 50/100 · loss 0.0123 · val_loss 0.0145 · 1:02/15:00 · ETA 0:50"
    bar.start(state)
    bar.finish(state)
    assert "step 50/100" in output.getvalue(), output.getvalue()


def test_config_needs_a_budget() -> None:
    with pytest.raises(ValueError, match="no training budget"):
        TrainerConfig()
    with pytest.raises(ValueError, match="extra"):
        TrainerConfig(max_steps=1, max_stepz=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(SelfdenError, match="sees no CUDA GPU"):
        resolve_device("cuda")


def test_the_plan_says_when_a_cpu_run_trains_in_bf16_without_being_asked(tmp_path: Path) -> None:
    import tifffile

    from selfden.runs.plan import new_run_config, plan_run

    image = tmp_path / "noisy.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((2, 64, 64), dtype=np.float32))

    def bf16_notes(**trainer: Any) -> list[str]:
        config = new_run_config("dnnet", [image], {"filters": 8}, {}, {"max_steps": 1, "device": "cpu", **trainer}, 0)
        return [note.text for note in plan_run(config).notes if "bf16" in note.text]

    assert len(bf16_notes()) == (1 if cpu_has_native_bf16() else 0)
    assert all("--no-cpu-bf16" in text for text in bf16_notes())
    assert bf16_notes(bf16_on_cpu=False) == [] and bf16_notes(bf16_on_cpu=True) == []
