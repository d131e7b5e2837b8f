"""raywae: beta-VAE and WAE sweeps on Ray Tune for disentanglement on dSprites."""

__version__ = "0.1.0"
