"""``dnnet``: joint self-supervised blind denoising and noise estimation (Ollion et al., arXiv 2102.08023).

A small U-Net (the D-net) predicts each grid-masked pixel from its neighbours. By default
(``noise_model="none"``) it minimises plain L2 on the masked pixels: Noise2Self (Batson &
Royer, ICML 2019). With ``noise_model="gmm"`` or ``"gaussian"`` a per-pixel network (the N-net)
turns the predicted signal into the noise distribution around it (a zero-mean Gaussian mixture
or a Gaussian), and both minimise the noise's negative log-likelihood on the masked pixels, as
in the paper.

Assumes noise independent between pixels given the signal: streaks and row offsets are
structure to this model and stay in its output (use ``cosdd`` for correlated noise).
Exported graph: "denoiser" (the D-net); the noise model is tabulated in the package config.

Defaults, as measured (benchmarks/RESULTS.md; ``benchmarks/bsd68.py``, ``dnnet_quality.py``):

- **64² crops in batches of 8 on a CPU.** A step costs the whole U-Net on every pixel of the
  crops although only the masked ~1/16 enter the loss, so 128² crops bought 4x fewer steps: on
  BSD68 (sigma 25) 166 steps in 12 single-core minutes (27.01 dB) against 727 steps of 64²
  crops in 10 (27.69 dB).
- **On a CPU, 32 channels in bf16 autocast** (``CPU_FILTERS``, ``cpu_bf16_pays``) where the CPU
  computes bf16 natively. A step at 64 channels in float32 took 568 ms (patch 64, batch 16, 2
  threads); bf16 made it 271 ms, 32 channels 163 ms, both 77 ms. On the Poisson-Gaussian suite the
  narrow net in bf16 made 4.4x the steps in 30 minutes and scored 28.09 dB against 27.91 for 64
  channels in float32, 1.1 dB over the truth-tuned BM3D (``benchmarks/peers.py``); on BSD68 (sigma
  25, 30 minutes) 28.55 dB against 28.28 (``benchmarks/bsd68.py``). A GPU keeps 64.
- **Learning rate annealed to 0 over the budget (cosine).** At a constant 4e-4 the weights keep
  moving: the last checkpoint of that 10-minute run scored 26.46 dB where its best by validation
  loss (the one exported) scored 27.69; annealed, the last weights are the best (27.67 dB), so a
  run's quality no longer hangs on which validation happened to be lowest.
- With both, 30 minutes on two CPU cores reach 28.22 dB on BSD68 with the L2 default (28.30 with
  ``--tta``; gmm: 28.28 and 28.38), above the published Noise2Void (27.71) and Noise2Same (27.95),
  below BM3D (28.57).
- **Plain L2 is the default; the noise model (gmm) is an option.** Against L2
  (``noise_model="none"``) at equal minutes the N-net's likelihood gained +0.26 and -0.11 dB
  affine PSNR on Poisson-Gaussian noise (two seeds, 10 minutes each) and -0.13 dB at 32 filters;
  on the real SEM frame (15 minutes each) L2's blind-spot error was 0.13 % lower, and L2 runs
  ~10 % more steps per minute. The reason: the likelihood weights each masked pixel by
  1/sigma²(signal), which under Adam only moves effort from noisy (bright) to quiet (dark)
  pixels, while PSNR counts every pixel alike; the optimum of both losses is the same
  conditional mean. What the N-net adds is the noise model itself (std and skewness against the
  signal: ``selfden noise-model``) and a likelihood that can censor clipped pixels. Published
  gains of the paper over Noise2Void (≈1.4 dB) also came with its masking and U-Net, which
  selfden uses with either loss.
- **With gmm, clipped pixels are censored, not noise** (``clipping.py``). On a real SEM frame (15 %
  of the pixels at 65535) the likelihood of their zero residuals under a narrow mixture component
  rewarded predicting the clip value exactly, and the output was posterised; counted as "at least
  65535", the D-net's blind-spot error fell from 2.41e8 (1000 steps) to 2.21e8 (2000 steps) and
  the output lost its posterisation (``benchmarks/dnnet_sem.py``). Plain L2 has no likelihood to
  fool and needs no such care.
- **It says when it is no better than a blur** (``blind_score.py``). On that SEM frame, 15 minutes
  of either loss left a blind-spot error 0.4-0.6 % below the best centre-less Gaussian blur's
  (a 34-minute gmm run of an earlier seed tied it).
"""

from selfden.methods.dnnet.config import DnnetConfig
from selfden.methods.dnnet.method import Dnnet
from selfden.methods.dnnet.noise_model import EmpiricalNoise, NoiseCurve, empirical_noise, noise_model_curve

__all__ = ["Dnnet", "DnnetConfig", "EmpiricalNoise", "NoiseCurve", "empirical_noise", "noise_model_curve"]
