"""Where COSDD's posterior samples come from: the split graphs (new packages) or the single sampler.

Split packages (``config.selfden.graphs`` has ``sampler_encoder`` and ``sampler_decoder``) run the
deterministic encoder once per tile and only the decoder per sample; the decoder's standard-normal
draws come from numpy, seeded from the tile's contents, so a tile's samples are the same whatever
order, process or machine it is run in, and they come in antithetic pairs (``LatentDraws``). Older packages have one ``sampler`` graph (noisy tile ->
one sample, drawing inside onnxruntime): every sample reruns it whole.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from selfden.errors import ModelError
from selfden.package.runtime import Device, OnnxRunner, create_session

ENCODER, DECODER, SAMPLER = "sampler_encoder", "sampler_decoder", "sampler"


class TileDraws(Protocol):
    def draw(self, count: int) -> np.ndarray:
        """``count`` posterior samples of the tile, (count, H, W) float32."""
        ...


@dataclass
class SingleGraphDraws:
    """Old packages: the N copies of a tile go through the whole sampler graph."""

    runner: OnnxRunner
    tile: np.ndarray

    def draw(self, count: int) -> np.ndarray:
        return self.runner.run(np.broadcast_to(self.tile, (count, 1, *self.tile.shape)))[:, 0]


@dataclass
class LatentDraws:
    """Standard-normal draws for one sample after another, level by level.

    With ``antithetic`` every second sample gets the negated draws of the one before: each is
    still an exact posterior sample, but the pair's errors largely cancel in their mean (where
    the decoder is near linear in the draws), so the MMSE settles with fewer samples.
    """

    rng: np.random.Generator
    antithetic: bool = False
    drawn: int = 0
    previous: list[np.ndarray] = field(default_factory=list)

    def next(self, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        if self.antithetic and self.drawn % 2:
            draws = [-e for e in self.previous]
        else:
            draws = [self.rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
        self.previous, self.drawn = draws, self.drawn + 1
        return draws


@dataclass
class SplitDraws:
    """One tile's encoder outputs, repeated per sample for the decoder, with its own draws."""

    source: SplitSource
    posts: list[np.ndarray]
    latents: LatentDraws

    def draw(self, count: int) -> np.ndarray:
        # Sample by sample, level by level: the same draws however the samples are split into
        # session runs (a CPU runs fewer at a time than a GPU).
        shapes = [(self.source.latent_channels[i], *post.shape[2:]) for i, post in enumerate(self.posts)]
        eps = [self.latents.next(shapes) for _ in range(count)]
        feeds: dict[str, np.ndarray] = {}
        for i, post in enumerate(self.posts):
            feeds[f"post{i}"] = np.ascontiguousarray(np.broadcast_to(post, (count, *post.shape[1:])))
            feeds[f"eps{i}"] = np.stack([sample[i] for sample in eps])
        return _run(self.source.decoder, self.source.files[1], feeds)[0][:, 0]


@dataclass
class SplitSource:
    """Encoder and decoder sessions of a split package; ``encoder_runs`` counts encoder passes.

    ``antithetic`` (the default) draws samples in antithetic pairs: on the stripe suite 8 paired
    samples gave a better MMSE than 100 independent ones (benchmarks/cosdd_antithetic.py).
    """

    encoder: Any
    decoder: Any
    files: tuple[Path, Path]
    latent_channels: list[int]
    seed: int = 0
    antithetic: bool = True
    encoder_runs: int = field(default=0)

    def start(self, tile: np.ndarray) -> SplitDraws:
        posts = _run(self.encoder, self.files[0], {"input": np.ascontiguousarray(tile[None, None], np.float32)})
        self.encoder_runs += 1
        # Seeded by the tile's bytes: reproducible per tile, independent of tile order and resumes.
        rng = np.random.default_rng([self.seed, zlib.crc32(np.ascontiguousarray(tile, np.float32).tobytes())])
        return SplitDraws(self, posts, LatentDraws(rng, self.antithetic))


def sampler_graphs(config_selfden: dict[str, Any], folder: Path) -> dict[str, Path]:
    """The sampling graphs ``config.selfden.graphs`` names (split pair, or the old single sampler)."""
    graphs = config_selfden.get("graphs", {}) or {}
    return {k: folder / str(graphs[k]) for k in (ENCODER, DECODER, SAMPLER) if graphs.get(k)}


def open_split(encoder: Path, decoder: Path, device: Device = "auto", seed: int = 0) -> SplitSource:
    """Sessions for the split graphs; ModelError when the decoder lacks the post*/eps* inputs."""
    enc, _ = create_session(encoder, device)
    dec, _ = create_session(decoder, device)
    inputs = {i.name: i.shape for i in dec.get_inputs()}
    levels = len(enc.get_outputs())
    try:
        channels = [int(inputs[f"eps{i}"][1]) for i in range(levels)]
    except (KeyError, TypeError, ValueError, IndexError):
        raise ModelError(f"{decoder}: expected inputs post0..post{levels - 1} and eps0..eps{levels - 1} with a fixed "
                         f"channel count, found {sorted(inputs)}; re-export the model") from None
    return SplitSource(enc, dec, (encoder, decoder), channels, seed)


def _run(session: Any, path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session.run(None, feeds)
    except Exception as error:  # onnxruntime raises its own exception types
        message = " ".join(str(error).split())[:200]
        raise ModelError(f"{path}: running the graph failed ({message}); if memory ran out, try a smaller --tile-size") from error
