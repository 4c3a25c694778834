"""selfden: self-supervised denoising trained on noisy data alone.

Train (PyTorch) -> export (ONNX + bioimage.io package) -> run (onnxruntime, Fiji, deepImageJ).
"""

__version__ = "0.1.0"
