"""aevae: train, compare and inspect autoencoders and variational autoencoders."""

__version__ = "0.1.0"
