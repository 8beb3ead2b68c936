"""s2i-fast: sketch-to-image GAN with Masked Residual Units."""

__version__ = "0.1.0"
