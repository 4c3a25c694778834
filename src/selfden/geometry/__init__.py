"""Image geometry shared by training, export and inference: orientations, tiles and halos, tile plans (numpy only)."""
