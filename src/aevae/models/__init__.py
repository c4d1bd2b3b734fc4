"""Models: one base LightningModule, one small file per model."""

from aevae.models.ae import AE
from aevae.models.base import Autoencoder
from aevae.models.btcvae import BetaTCVAE
from aevae.models.checkpoint import load_checkpoint, resolve_checkpoint
from aevae.models.classifier import Classifier
from aevae.models.contractive_ae import ContractiveAE
from aevae.models.cvae import CVAE
from aevae.models.hvae import HVAE
from aevae.models.iwae import IWAE
from aevae.models.module import Model
from aevae.models.nets import MLP, Conv, ResNet
from aevae.models.sparse_ae import SparseAE
from aevae.models.vae import VAE
from aevae.models.vamp import VampVAE
from aevae.models.vq_prior import VQPrior
from aevae.models.vqvae import VQVAE
from aevae.models.wae import WAE

__all__ = [
    "AE",
    "CVAE",
    "HVAE",
    "IWAE",
    "MLP",
    "VAE",
    "WAE",
    "VQVAE",
    "Autoencoder",
    "BetaTCVAE",
    "Classifier",
    "ContractiveAE",
    "Conv",
    "Model",
    "ResNet",
    "VampVAE",
    "SparseAE",
    "VQPrior",
    "load_checkpoint",
    "resolve_checkpoint",
]
