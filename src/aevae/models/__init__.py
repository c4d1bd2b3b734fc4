"""Models: one base LightningModule, one small file per model."""

from aevae.models.ae import AE
from aevae.models.base import Autoencoder
from aevae.models.checkpoint import load_checkpoint, resolve_checkpoint
from aevae.models.classifier import Classifier
from aevae.models.cvae import CVAE
from aevae.models.hvae import HVAE
from aevae.models.iwae import IWAE
from aevae.models.module import Model
from aevae.models.nets import MLP, Conv, ResNet
from aevae.models.vae import VAE
from aevae.models.vamp import VampVAE

__all__ = [
    "AE",
    "CVAE",
    "HVAE",
    "IWAE",
    "MLP",
    "VAE",
    "Autoencoder",
    "Classifier",
    "Conv",
    "Model",
    "ResNet",
    "VampVAE",
    "load_checkpoint",
    "resolve_checkpoint",
]
