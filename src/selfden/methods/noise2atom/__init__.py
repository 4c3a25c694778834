"""``noise2atom``: unpaired denoising of atomic-resolution STEM images.

Wang, Henninen, Keller, Erni, "Noise2Atom: unsupervised denoising for scanning transmission
electron microscopy images", Applied Microscopy 50:23 (2020), doi:10.1186/s42649-020-00041-8.

Real noisy crops on one side, simulated clean atom images (``atom_spacing``, ``atom_sigma``:
match them to the data, see ``selfden.methods.noise2atom.atom_check``) on the other. Ms2c (noisy -> clean) is
trained to fool a WGAN-GP critic into taking its output for a simulation, while Mc2s
(clean -> noisy) closes two cycles: clean -> noisy -> clean, and noisy -> clean -> noisy on
the low frequencies (a fixed Gaussian low-pass filter), which ties Ms2c's output to the input.
Per training step: 5 critic steps, 1 adversarial step of Ms2c, 1 cycle step of both
generators (RMSprop; one optimiser for both generators, so the loss weights set the relative
step sizes). The exported "denoiser" is Ms2c between [0, 1] ("range" normalisation) and [-1, 1].

Choices that differ from the paper, each measured on the atoms suite (2 shared CPU cores,
64² crops, batch 4; the helper report has the tables):

- ``input_skip``: the input is added before the output tanh, so both generators start near
  the identity. Without it Ms2c collapsed within 20-40 steps to an input-independent output
  in 8 of 9 short runs (sparse atoms make a dark constant the L1 cycle's cheapest answer);
  with it the output keeps r > 0.8 with the input while the critic cleans it.
- ``clean_amplitude`` 0.9: simulated clean images span [-0.9, 0.9], so tanh reaches their
  background with a finite pre-activation instead of being driven to -infinity.
- ``saturation_guard``: a penalty on Ms2c's pre-tanh output beyond +-2. The critic's push
  towards dark backgrounds otherwise saturated the tanh (1 run in 3 within 40 steps), where
  gradients vanish but RMSprop's normalised steps keep going.
- CPU-sized networks and learning rates 2e-4 (generators) / 8e-4 (critic), see below
  (paper: 5e-5 for both over ~65,000 steps; a CPU budget buys a few thousand).
  Adversarial/cycle/low-pass weights 1/1/1 (the released code): 5/1/1 (the paper) scored
  23.28 vs 23.46 dB after 15 minutes and collapsed in a short run.
- ``val_loss`` = clean cycle + low-pass cycle on fixed crops and fixed simulations
  (unweighted): it needs no ground truth, rose sharply whenever Ms2c lost the input (the
  checkpoint to avoid) and fell as affine PSNR rose on average, but too noisily to pick
  checkpoints by (see below); the critic's Wasserstein estimate is logged but not
  comparable across steps (the critic changes).
- No instance normalisation (the paper's): it makes a tile's output depend on the tile, and
  it trained no better in a short run. Tiling with ``halo`` matches whole-image inference.
- Multi-kernel blocks run as one convolution with zero-padded kernels (same function):
  default config, 64² crops, batch 4, one thread: 0.74 -> 0.52 s per step (1.9 steps per
  CPU-second; critic 0.28 s, adversarial 0.06 s, cycle 0.18 s of it). The 15-minute record of
  119 steps (23.46 dB) had 0.11 cores; one free core now gives about 1,700 steps in 15 minutes.

Stability, measured in 4-minute single-thread runs (atoms suite, 64² crops, batch 4, affine
PSNR of Ms2c on 8 held-out frames, noisy 22.35 dB, machine shared so steps not seconds compare):

- One learning rate for all (3e-4, the former default) never settles: 23.97 dB at step 50,
  20.32 at 75, 24.61 at 150, 22.43 at 200, 22.46 at 300, 24.01 at 475. 1e-4 for all did no
  better (24.05 at step 154, 19.96 at 197), nor did 2 critic steps.
- Two time-scale update rule (TTUR: Heusel et al., "GANs trained by a two time-scale update
  rule converge to a local Nash equilibrium", NeurIPS 2017): generators 1e-4, critic 4e-4
  climb steadily instead: 23.80 (step 80), 24.83 (160), 25.49 (240), 26.02 (280),
  26.00 (360). Seed 2, which lost the input by step 20 at 3e-4, kept it: 22.70 (80),
  24.34 (200), 23.86 (280). Twice those rates (2e-4 / 8e-4, the defaults) climb faster:
  seed 0 24.83 (80), 25.57 (120), 25.98 (240), 26.13 (360); seed 2 23.92 (80), 25.53
  (160), 24.46 (240), 26.14 (280). Weight-averaged (below) at step 280: seed 0 25.85,
  seed 2 25.40 (1e-4 / 4e-4: 25.22 and 24.27).
- ``ema_decay`` 0.99: validation, ``denoise`` and the export use a bias-corrected moving
  average of Ms2c's weights (``selfden.methods.weight_average``). At 3e-4 it turned the 20.3-24.6 dB swings into
  23.6-24.1 dB; with TTUR it smooths the remaining dips (seed 2, step 240: raw 24.46,
  average 24.96) and lags the rising raw weights by 0-0.7 dB (0.995: up to 1 dB), a lag
  that shrinks as training levels off.
- ``export_best_checkpoint`` is False: the cycle ``val_loss`` jumped between 0.05 and 0.2 at
  unchanged quality and its minimum was not the best checkpoint by PSNR, so runs export the
  last (weight-averaged) checkpoint.

Late drift, and the low-pass fidelity term (``lpf_fidelity_weight``, default 1). Over a full
30-minute budget (2301 steps) the defaults above did not hold: the exported generator scored
20.95 dB on the 200 atoms frames, below the noisy 21.93, inventing atoms with dark halos. Its
validation log shows why without ground truth: the output's correlation with the input fell
from 0.79 (step 200) to 0.42 and ``val_lpf_infidelity`` (how badly the output's low
frequencies, after the best non-negative affine map, explain the input's) rose from 0.47 to
0.71. The paper's low-pass cycle goes through Mc2s, which learns to undo whatever Ms2c
invents; nothing tied Ms2c's own output to its input. So Ms2c's adversarial step now also
minimises that infidelity directly (shot and scan-line noise are zero-mean, so a denoiser
must keep the input's low frequencies up to gain and offset). Trajectories, 8 held-out
frames (noisy 22.35, oracle Gaussian blur 26.02 dB), one thread, same seed:

| step                      | 300   | 600   | 900   | 1200  | 1500  | 1800  | 2100  |
|---------------------------|-------|-------|-------|-------|-------|-------|-------|
| without (weight 0)        | 25.94 | 26.65 | 26.73 | 26.14 | 25.35 | -     | -     |
| lr x 1/(1 + step/300)     | 25.87 | 26.37 | 26.55 | -     | -     | -     | -     |
| fidelity weight 1         | 26.16 | 26.82 | 27.24 | 27.39 | 27.34 | 27.56 | 27.96 |

(the held-out infidelity stayed at 0.32-0.45 with the term). A decaying learning rate only
slowed the climb; the fidelity term both lifts the peak and removes the late collapse.
The 30-minute benchmark with it (1835 steps on a shared core, ``benchmarks/noise2atom_quality.py
--minutes 30 --patch-size 64 --batch-size 4 --threads 1 --skip-stem``): 26.18 dB, SSIM 0.668 on
all 200 frames, above every oracle baseline (Gaussian blur 25.90 / 0.369, BM3D 24.76 / 0.486,
NLM 24.37 / 0.387; noisy 21.93 / 0.249).
"""

from selfden.methods.noise2atom.config import Noise2AtomConfig
from selfden.methods.noise2atom.method import Noise2Atom

__all__ = ["Noise2Atom", "Noise2AtomConfig"]
