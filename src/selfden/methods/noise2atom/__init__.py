"""``noise2atom``: unpaired denoising of atomic-resolution STEM images.

Wang, Henninen, Keller, Erni, "Noise2Atom: unsupervised denoising for scanning transmission
electron microscopy images", Applied Microscopy 50:23 (2020), doi:10.1186/s42649-020-00041-8.

Real noisy crops on one side, simulated clean atom images (``atom_spacing``, ``atom_sigma``:
match them to the data, see ``selfden.atom_check``) on the other. Ms2c (noisy -> clean) is
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
- CPU-sized networks and learning rate 3e-4 (paper: 5e-5 over ~65,000 steps; a CPU budget
  buys a few hundred). Adversarial/cycle/low-pass weights 1/1/1 (the released code): 5/1/1
  (the paper) scored 23.28 vs 23.46 dB after 15 minutes and collapsed in a short run.
- ``val_loss`` = clean cycle + low-pass cycle on fixed crops and fixed simulations
  (unweighted): it needs no ground truth, rose sharply whenever Ms2c lost the input (the
  checkpoint to avoid) and fell as affine PSNR rose; the critic's Wasserstein estimate is
  logged but not comparable across steps (the critic changes).
- No instance normalisation (the paper's): it makes a tile's output depend on the tile, and
  it trained no better in a short run. Tiling with ``halo`` matches whole-image inference.
- Multi-kernel blocks run as one convolution with zero-padded kernels (same function):
  default config, 64² crops, batch 4, one thread: 0.74 -> 0.52 s per step (1.9 steps per
  CPU-second; critic 0.28 s, adversarial 0.06 s, cycle 0.18 s of it). The 15-minute record of
  119 steps (23.46 dB) had 0.11 cores; one free core now gives about 1,700 steps in 15 minutes.

Open problem, measured in short single-thread runs (atoms suite, 64² crops, batch 4, affine
PSNR on held-out frames every ~20 s): the WGAN is unstable. Quality peaks early and then swings:
lr 3e-4: 22.31 (noisy) -> 24.02 dB at step 37, 19.96 at step 173, 22.12 at step 207;
lr 1e-4: 23.56 -> 24.05 (step 154) -> 19.96 (step 197); critic_steps 2 (2.75 steps/s):
19.87 at step 50, 23.81 at step 331. Of three seeds at lr 3e-4, two gained ~1.2 dB in 80
steps and one lost the input (19.5 dB by step 20). The checkpoint kept by ``val_loss`` was not
the best by PSNR in those runs. Defaults are unchanged until a longer comparison says otherwise.
"""

from selfden.methods.noise2atom.config import Noise2AtomConfig
from selfden.methods.noise2atom.method import Noise2Atom

__all__ = ["Noise2Atom", "Noise2AtomConfig"]
