"""Models: one base LightningModule, one small file per model."""

from aevae.models.ae import AE
from aevae.models.base import Autoencoder
from aevae.models.checkpoint import load_checkpoint
from aevae.models.iwae import IWAE
from aevae.models.nets import MLP, Conv
from aevae.models.vae import VAE

__all__ = ["AE", "IWAE", "MLP", "VAE", "Autoencoder", "Conv", "load_checkpoint"]
