"""The generic training loop: feed batches, call the method's steps, keep time, validate,
checkpoint, log and stop. Nothing here knows which method it trains.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from selfden.methods.base import Method
from selfden.training.checkpoint import (
    TrainingCounters,
    load_latest_checkpoint,
    make_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from selfden.training import data_parallel
from selfden.training.config import TrainerConfig
from selfden.training.device import autocast_context, batch_to_device, seed_everything, uses_bf16
from selfden.training.metrics_log import MetricsLog
from selfden.training.progress import ProgressReporter, ProgressState, format_seconds
from selfden.training.result import RunPaths, StopReason, TrainingDiverged, TrainResult
from selfden.training.signals import StopRequest, sigterm_as_interrupt, stop_between_steps

logger = logging.getLogger(__name__)

#: A clock-triggered validation waits this many times the last validation's cost (<= ~5 % of the time).
VAL_COST_RATIO = 19.0

#: Weight of the newest step in the smoothed train metrics shown by the progress display.
_EMA_WEIGHT = 0.1


def train(
    method: Method,
    next_batch: Callable[[], np.ndarray],
    val_batches: Sequence[np.ndarray],
    run_dir: Path,
    config: TrainerConfig,
    resume: bool = False,
    progress: ProgressReporter | None = None,
    *,
    data_rng: np.random.Generator | None = None,
) -> TrainResult:
    """Train ``method`` until ``config``'s first budget ends; see ``selfden.training`` for the files written.

    ``next_batch`` returns normalised ``(B, 1, P, P)`` float32 arrays; ``val_batches`` are fixed
    arrays of the same layout. ``data_rng`` (the Generator behind ``next_batch``), when given,
    is checkpointed too, so a resumed run draws the crops an uninterrupted run would have.
    Raises :class:`TrainingDiverged` when a loss becomes NaN or infinite.

    Inside a data-parallel group (see :mod:`selfden.training.data_parallel`) every rank calls this
    with its own ``next_batch``; the logged train metrics are averaged over ranks, rank 0 alone
    validates, writes files and reports progress, and its decisions (stop, validate) are shared.
    """
    run = _Run(method, next_batch, val_batches, RunPaths(Path(run_dir)), config, progress, data_rng)
    run.prepare(resume)
    # Rank 0 owns stops, as it owns Ctrl-C; other ranks keep SIGTERM's default so that rank 0 can
    # end them even while they wait inside a collective.
    with sigterm_as_interrupt() if run.rank.is_main else contextlib.nullcontext():
        return run.execute()


class _Run:
    """State of one training session (a fresh run or one resume)."""

    def __init__(
        self,
        method: Method,
        next_batch: Callable[[], np.ndarray],
        val_batches: Sequence[np.ndarray],
        paths: RunPaths,
        config: TrainerConfig,
        progress: ProgressReporter | None,
        data_rng: np.random.Generator | None,
    ) -> None:
        if not val_batches:
            raise ValueError("train() needs at least one validation batch")
        _check_device(method.device, config)
        self.method, self.next_batch, self.paths, self.config = method, next_batch, paths, config
        self.rank = data_parallel.current()
        self.progress = progress if self.rank.is_main else None
        self.data_rng = data_rng
        self.device = method.device
        self.bf16 = uses_bf16(self.device, config, method.config.cpu_bf16_pays())
        self.val_batches = [batch_to_device(batch, self.device) for batch in val_batches]
        self.log = MetricsLog(paths.metrics)
        self.counters = TrainingCounters()
        self.fresh = True
        self.window: dict[str, list[float]] = defaultdict(list)
        self.smoothed: dict[str, float] = {}
        self.last_train: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        self.last_val_step = -1
        self.last_val_cost = 0.0
        self.saved_step: int | None = None
        self.stop = StopRequest()  # rank 0's Ctrl-C or SIGTERM, read before each step

    # --- set-up -------------------------------------------------------------------------
    def prepare(self, resume: bool) -> None:
        """Restore a checkpoint, or clear what an earlier run left in the folder."""
        if self.rank.is_main:
            self.paths.checkpoints.mkdir(parents=True, exist_ok=True)
        if resume:
            self._restore()
        else:
            self._start_fresh()
        if self.rank.distributed:
            self._split_random_streams()
            data_parallel.barrier()  # every rank has read last.pt before rank 0 may replace it
        self.carried = self.counters.elapsed_seconds
        self.last_val_elapsed = self.last_checkpoint_elapsed = self.carried

    def _restore(self) -> None:
        checkpoint = load_latest_checkpoint(self.paths.last_checkpoint, self.paths.best_checkpoint)
        self.counters = restore_checkpoint(checkpoint, self.method, self.data_rng)
        if self.rank.is_main:
            self.log.drop_after(self.counters.step)
        self.fresh, self.saved_step = False, self.counters.step
        logger.info("resuming %s at step %d (%.0f s trained)", self.paths.run_dir,
                    self.counters.step, self.counters.elapsed_seconds)

    def _start_fresh(self) -> None:
        seed_everything(self.config.seed)
        if not self.rank.is_main:
            return
        if self.paths.last_checkpoint.exists():
            logger.warning("starting a fresh run in %s: its checkpoints and metrics are replaced", self.paths.run_dir)
        self.paths.best_checkpoint.unlink(missing_ok=True)
        self.log.reset()

    def _split_random_streams(self) -> None:
        """Ranks > 0 get their own torch, crop and method streams; rank 0 keeps the single-process ones.

        Fresh runs seed with ``seed + rank``; a resume (which restored rank 0's states everywhere)
        mixes in the step so a rank does not replay the crops it drew at the start.
        """
        rank, step = self.rank.rank, self.counters.step
        if rank == 0:
            return
        key = self.config.seed + rank if step == 0 else [self.config.seed + rank, step]
        torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        if self.data_rng is not None:
            self.data_rng.bit_generator.state = np.random.default_rng(key).bit_generator.state
        self.method.decorrelate_streams(rank)

    # --- the loop -----------------------------------------------------------------------
    def execute(self) -> TrainResult:
        """Run to the end of the budget, an early stop or Ctrl-C (or SIGTERM); save, report, return."""
        self.t0, self.start_step = time.monotonic(), self.counters.step
        logger.info("training on %s (bf16 autocast: %s)", self.device, self.bf16)
        if self.progress is not None:
            self.progress.start(self._progress_state())
        try:
            return self._finish(self._train_guarded())
        finally:
            if self.progress is not None:
                self.progress.finish(self._progress_state())

    def _train_guarded(self) -> StopReason:
        stops = stop_between_steps() if self.rank.is_main else contextlib.nullcontext(self.stop)
        try:
            with stops as self.stop:
                if self.fresh:
                    self._validate()  # a baseline point for the curves
                reason = self._loop()
            self._flush_train()
            if reason == "interrupted":
                logger.warning("stopped by %s at step %d; saving %s", self.stop.signal_name or "signal",
                               self.counters.step, self.paths.last_checkpoint)
            elif self.counters.step > self.last_val_step:
                self._validate()
            return reason
        except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop's handler was in place
            logger.warning("interrupted at step %d; saving %s", self.counters.step, self.paths.last_checkpoint)
            self._flush_train()
            return "interrupted"

    def _loop(self) -> StopReason:
        while True:
            # rank 0's clock decides for everyone, so all ranks stop, validate and anneal alike
            reason, fraction = data_parallel.broadcast((self._budget_spent(), self._budget_fraction()))
            if reason is not None:
                return reason
            self.method.on_budget_progress(fraction)
            self._train_step()
            validated = data_parallel.broadcast(self._validation_due())
            if validated:
                self._validate()
                if self._patience_exhausted():
                    return "early_stopping"
            if self._checkpoint_due(validated):
                self._save(self.paths.last_checkpoint)
            if self.progress is not None:
                self.progress.update(self._progress_state())

    def _checkpoint_due(self, validated: bool) -> bool:
        # Until the run has a last.pt it can neither resume nor be exported: the first is written
        # at the first validation after training steps (about 30 s in) unless the cadence comes first.
        if validated and self.saved_step is None:
            return True
        return self.elapsed() - self.last_checkpoint_elapsed >= 60.0 * self.config.checkpoint_every_minutes

    def _budget_fraction(self) -> float:
        """Share of the budget used (``ProgressState.fraction`` without the metric copies)."""
        return ProgressState(self.counters.step, self.elapsed(), self.config.max_steps, self.config.max_seconds).fraction

    def _budget_spent(self) -> StopReason | None:
        if self.stop.requested:
            return "interrupted"
        if self.config.max_steps is not None and self.counters.step >= self.config.max_steps:
            return "max_steps"
        max_seconds = self.config.max_seconds
        if max_seconds is not None and self.elapsed() >= max_seconds:
            return "max_minutes"
        return None

    def _train_step(self) -> None:
        batch = batch_to_device(self.next_batch(), self.device)
        with autocast_context(self.device, self.bf16):
            metrics = _as_floats(self.method.training_step(batch))
        metrics = data_parallel.mean_metrics(metrics, self.device)
        self._require_finite(metrics, "loss", "training_step", self.counters.step + 1)
        self.counters.step += 1
        for key, value in metrics.items():
            self.window[key].append(value)
            previous = self.smoothed.get(key, value)
            self.smoothed[key] = previous + _EMA_WEIGHT * (value - previous)
        if self.counters.step % self.config.log_every_steps == 0:
            self._flush_train()

    def _flush_train(self) -> None:
        if not self.window:
            return
        self.last_train = {key: float(np.mean(values)) for key, values in self.window.items()}
        if self.rank.is_main:
            self.log.write(self.counters.step, self.elapsed(), "train", self.last_train)
        self.window.clear()

    # --- validation ---------------------------------------------------------------------
    def _validation_due(self) -> bool:
        by_steps = self.counters.step % self.config.val_every_steps == 0
        # The clock's trigger waits at least VAL_COST_RATIO x the last validation's cost, so validation
        # stays within ~5 % of the wall time when it is slow: on a loaded machine one took 24 s, and a
        # 30-s cadence then validated every 3 steps (40 % of the time went to validation).
        wait = max(self.config.val_every_seconds, VAL_COST_RATIO * self.last_val_cost)
        return by_steps or self.elapsed() - self.last_val_elapsed >= wait

    def _validate(self) -> None:
        # Rank 0 validates; every rank gets its metrics so schedulers and early stopping agree.
        started = time.monotonic()
        metrics = data_parallel.broadcast(self._average_validation() if self.rank.is_main else None)
        self._require_finite(metrics, "val_loss", "validation_step", self.counters.step)
        self.last_val_cost = time.monotonic() - started
        if self.rank.is_main:  # val_seconds: what validation costs the budget (benchmarks/peers.py reports it)
            self.log.write(self.counters.step, self.elapsed(), "val", {**metrics, "val_seconds": self.last_val_cost})
        self.last_val, self.last_val_step = metrics, self.counters.step
        self.method.on_validation_end(metrics)
        logger.debug("step %d validation: %s", self.counters.step, metrics)
        self._track_best(metrics["val_loss"])
        # measured after the work so a slow validation cannot crowd out training
        self.last_val_elapsed = self.elapsed()

    def _track_best(self, val_loss: float) -> None:
        if self.counters.step == 0:  # the untrained baseline is a point on the curves, never weights to export
            return
        if val_loss < self.counters.best_val_loss:
            self.counters.best_val_loss = val_loss
            self.counters.validations_since_best = 0
            self._save(self.paths.best_checkpoint)
        else:
            self.counters.validations_since_best += 1

    def _average_validation(self) -> dict[str, float]:
        sums: dict[str, float] = defaultdict(float)
        count = 0
        for batch in self.val_batches:
            with autocast_context(self.device, self.bf16):
                metrics = _as_floats(self.method.validation_step(batch))
            for key, value in metrics.items():
                sums[key] += value * batch.shape[0]
            count += batch.shape[0]
        return {key: total / count for key, total in sums.items()}

    def _patience_exhausted(self) -> bool:
        patience = self.config.early_stopping_patience
        return patience is not None and self.counters.validations_since_best >= patience

    # --- checkpoints, errors, end -------------------------------------------------------
    def elapsed(self) -> float:
        """Training seconds, including those carried over from earlier sessions."""
        return self.carried + time.monotonic() - self.t0

    def _save(self, path: Path) -> None:
        self.counters.elapsed_seconds = self.elapsed()
        if not self.rank.is_main:
            return
        save_checkpoint(make_checkpoint(self.method, self.counters, self.data_rng), path)
        if path == self.paths.last_checkpoint:
            self.last_checkpoint_elapsed, self.saved_step = self.counters.elapsed_seconds, self.counters.step

    def _require_finite(self, metrics: dict[str, float], key: str, source: str, step: int) -> None:
        if key not in metrics:
            raise ValueError(f"{type(self.method).__name__}.{source} returned no {key!r}: {sorted(metrics)}")
        if math.isfinite(metrics[key]):
            return
        self._flush_train()
        kept = (f"the last good checkpoint {self.paths.last_checkpoint} (step {self.saved_step}) is kept"
                if self.saved_step is not None else "no checkpoint had been saved yet")
        raise TrainingDiverged(
            f"training diverged: {key} became {metrics[key]} at step {step} and training "
            f"stopped; {kept}; lower the learning rate or check the input data for outliers and train again"
        )

    def _finish(self, reason: StopReason) -> TrainResult:
        self._save(self.paths.last_checkpoint)
        report_written = self._write_report()
        best = self.counters.best_val_loss
        logger.info("training stopped (%s) at step %d after %.0f s; best val_loss %.4g",
                    reason, self.counters.step, self.counters.elapsed_seconds, best)
        return TrainResult(
            steps=self.counters.step,
            elapsed_seconds=self.counters.elapsed_seconds,
            best_val_loss=best if math.isfinite(best) else None,
            paths=self.paths,
            final_metrics={**self.last_train, **self.last_val},
            interrupted=reason == "interrupted",
            stop_reason=reason,
            report_written=report_written,
        )

    def _write_report(self) -> bool:
        if not self.config.write_report or not self.rank.is_main:
            return False
        from selfden.report import training_report  # matplotlib only when a report is drawn

        try:
            crop = self.val_batches[0][:1]
            with torch.no_grad():
                denoised = self.method.denoise(crop)
            name = getattr(type(self.method), "name", type(self.method).__name__)
            title = f"{name}: {self.counters.step} steps, {format_seconds(self.elapsed())} (normalised units)"
            training_report(self.paths.metrics, _first_image(crop), _first_image(denoised), self.paths.report, title)
            with torch.no_grad():
                for figure in self.method.diagnostic_figures(self.val_batches, self.paths.report.parent):
                    logger.info("wrote %s", figure)
        except KeyboardInterrupt:
            logger.warning("report skipped (interrupted)")
            return False
        except Exception:  # a figure must not cost the caller a finished training's result
            logger.exception("could not write %s", self.paths.report)
            return False
        return True

    def _progress_state(self) -> ProgressState:
        session_seconds = time.monotonic() - self.t0
        done = self.counters.step - self.start_step
        return ProgressState(
            step=self.counters.step,
            elapsed_seconds=self.carried + session_seconds,
            max_steps=self.config.max_steps,
            max_seconds=self.config.max_seconds,
            steps_per_second=done / session_seconds if done > 0 and session_seconds > 0 else None,
            train=dict(self.smoothed),
            val=dict(self.last_val),
        )


def _as_floats(metrics: dict[str, float]) -> dict[str, float]:
    # methods may hand back 0-d tensors; logs and comparisons want Python floats
    return {key: float(value) for key, value in metrics.items()}


def _first_image(batch: torch.Tensor) -> np.ndarray:
    return batch[0, 0].detach().float().cpu().numpy()


def _check_device(device: torch.device, config: TrainerConfig) -> None:
    if config.device != "auto" and device.type != config.device:
        raise ValueError(
            f"the method is on {device} but TrainerConfig.device is {config.device!r}; "
            "build the method on selfden.training.resolve_device(config.device)"
        )
