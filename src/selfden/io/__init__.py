"""Images in and out: reading with limits, metadata, Zarr, the one resumable writer, atomic writes (no torch)."""
