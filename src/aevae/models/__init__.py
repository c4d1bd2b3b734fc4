"""Models: one base LightningModule, one small file per model."""

from aevae.models.ae import AE
from aevae.models.base import Autoencoder
from aevae.models.checkpoint import load_checkpoint, resolve_checkpoint
from aevae.models.classifier import Classifier
from aevae.models.iwae import IWAE
from aevae.models.module import Model
from aevae.models.nets import MLP, Conv, ResNet
from aevae.models.vae import VAE
from aevae.models.vq_prior import VQPrior
from aevae.models.vqvae import VQVAE

__all__ = [
    "AE",
    "IWAE",
    "MLP",
    "VAE",
    "VQVAE",
    "Autoencoder",
    "Classifier",
    "Conv",
    "Model",
    "ResNet",
    "VQPrior",
    "load_checkpoint",
    "resolve_checkpoint",
]
