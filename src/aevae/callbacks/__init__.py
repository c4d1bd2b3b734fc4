"""Lightning callbacks (the `callbacks` config group)."""

from aevae.callbacks.histograms import LatentHistograms, LearningRateMonitor
from aevae.callbacks.hparams import HParams
from aevae.callbacks.media import Interpolations, PriorSamples, Reconstructions
from aevae.callbacks.progress import StepProgressBar
from aevae.callbacks.projector import LatentProjector
from aevae.callbacks.timer import EpochTimer

__all__ = [
    "EpochTimer",
    "HParams",
    "Interpolations",
    "LatentHistograms",
    "LatentProjector",
    "LearningRateMonitor",
    "PriorSamples",
    "Reconstructions",
    "StepProgressBar",
]
