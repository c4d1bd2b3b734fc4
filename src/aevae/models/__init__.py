"""Models: one base LightningModule, one small file per model."""

from aevae.models.ae import AE
from aevae.models.base import Autoencoder
from aevae.models.btcvae import BetaTCVAE
from aevae.models.checkpoint import load_checkpoint, resolve_checkpoint
from aevae.models.classifier import Classifier
from aevae.models.contractive_ae import ContractiveAE
from aevae.models.iwae import IWAE
from aevae.models.module import Model
from aevae.models.nets import MLP, Conv, ResNet
from aevae.models.sparse_ae import SparseAE
from aevae.models.vae import VAE
from aevae.models.wae import WAE

__all__ = [
    "AE",
    "IWAE",
    "MLP",
    "VAE",
    "WAE",
    "Autoencoder",
    "BetaTCVAE",
    "Classifier",
    "ContractiveAE",
    "Conv",
    "Model",
    "ResNet",
    "SparseAE",
    "load_checkpoint",
    "resolve_checkpoint",
]
