"""selfden's COSDD prior: starting weights pretrained on procedural scenes (``selfden.scenes``).

A COSDD model trained from random weights needs about 1000 steps (10 minutes on 2 CPU cores) to
catch up with a Gaussian blur on the stripe suite; users judge a training in its first minutes.
The prior is the tiny preset's networks (default layout) after 4000 steps on 1024 generated scenes
with noise of random strength (Poisson, read noise, row-correlated noise), none of them a benchmark
image, with free bits 0.1 (the default then; its recorded command predates 0.03); new runs fine-tune
it on their own frames. Measured on the stripe suite (first 8 frames,
seed 3, ``benchmarks/cosdd_trajectory.py --steps 555``): direct / MMSE-8 25.37 / 25.21 dB after 555
steps (5 minutes on 2 cores) against 23.06 / 23.38 for the previous default from random weights
(oracle NLM 25.10, blur 23.87); untrained on these frames it already scores 24.4 (direct).
Built by ``benchmarks/make_cosdd_prior.py``; records in benchmarks/RESULTS.md ("COSDD: starting
from the prior").

The noise model learnt rows; for column noise (direction y) the AR decoder transposes the image,
so the same weights serve. Direction "none" has another noise model: it starts from random weights,
as does any run whose networks differ from the prior's (another preset or --set option).
The file is numpy arrays only (read with ``allow_pickle=False``) and pinned by its SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from selfden.errors import SelfdenError
from selfden.methods.cosdd.config import CosddArch

PRIOR_FILE = Path(__file__).with_name("prior_tiny.npz")
PRIOR_SHA256 = "bc7c8ea627a4605305f263c7466a5976fcec45c3c8b662c06c1686d654215a4c"
#: Key of the JSON description (the arch it fits, how it was made) among the arrays.
META_KEY = "meta"


def fits_prior(arch: CosddArch) -> bool:
    """Whether networks of ``arch`` can start from the prior."""
    if arch.direction == "none":
        return False
    return _arch_key(arch) == prior_meta()["arch"]


def prior_networks(arch: CosddArch) -> dict[str, dict[str, torch.Tensor]] | None:
    """The prior's state dict per network (vae, ar_decoder, signal_decoder, direct), None when it does not fit."""
    if not fits_prior(arch):
        return None
    arrays = _arrays()
    networks: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        if key != META_KEY:
            network, _, name = key.partition("/")
            networks.setdefault(network, {})[name] = torch.from_numpy(value.copy())
    return networks


def prior_meta() -> dict:
    """The prior's description: ``arch`` (the networks it fits, direction x), ``steps``, ``command``, ``data``."""
    return json.loads(str(_arrays()[META_KEY]))


def save_prior(path: Path, networks: dict[str, dict[str, torch.Tensor]], arch: CosddArch, **meta: object) -> str:
    """Write ``networks`` and their description as a prior file; return its SHA-256 (to pin in PRIOR_SHA256)."""
    arrays = {f"{net}/{name}": t.detach().cpu().numpy() for net, state in networks.items() for name, t in state.items()}
    arrays[META_KEY] = np.array(json.dumps({"arch": _arch_key(arch), **meta}, sort_keys=True))
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _arch_key(arch: CosddArch) -> dict:
    return dataclasses.asdict(dataclasses.replace(arch, direction="x"))


@lru_cache(maxsize=1)
def _arrays() -> dict[str, np.ndarray]:
    fix = "reinstall selfden, or train from random weights with --set prior=false"
    try:
        data = PRIOR_FILE.read_bytes()
    except OSError as exc:
        raise SelfdenError(f"{PRIOR_FILE}: cannot read selfden's COSDD prior ({exc.strerror}); {fix}") from None
    if hashlib.sha256(data).hexdigest() != PRIOR_SHA256:
        raise SelfdenError(f"{PRIOR_FILE}: selfden's COSDD prior is damaged (its SHA-256 is not the pinned one); {fix}")
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}
