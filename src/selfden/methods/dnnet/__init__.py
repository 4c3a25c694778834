"""``dnnet``: joint self-supervised blind denoising and noise estimation (Ollion et al., arXiv 2102.08023).

A small U-Net (the D-net) predicts each grid-masked pixel from its neighbours; a per-pixel
network (the N-net) turns the predicted signal into the noise distribution around it (a
Gaussian or a zero-mean Gaussian mixture), and both minimise the noise's negative
log-likelihood on the masked pixels. ``noise_model="none"`` trains the D-net with plain L2
on the masked pixels instead: the Noise2Self baseline (Batson & Royer, ICML 2019).

Assumes noise independent between pixels given the signal: streaks and row offsets are
structure to this model and stay in its output (use ``cosdd`` for correlated noise).
Exported graph: "denoiser" (the D-net); the noise model is tabulated in the package config.
"""

from selfden.methods.dnnet.config import DnnetConfig
from selfden.methods.dnnet.method import Dnnet
from selfden.methods.dnnet.noise_model import EmpiricalNoise, NoiseCurve, empirical_noise, noise_model_curve

__all__ = ["Dnnet", "DnnetConfig", "EmpiricalNoise", "NoiseCurve", "empirical_noise", "noise_model_curve"]
