"""A bioimage.io model package as data: contained files and hashes, the rdf, pre/post-processing, ONNX sessions (no torch)."""
