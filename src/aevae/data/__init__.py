"""Data: device-resident tensors for the MNIST family."""

from aevae.data.batches import TensorBatches, count_images, to_float
from aevae.data.datamodule import DATASETS, MNISTDataModule
from aevae.data.idx import DataError

__all__ = ["DATASETS", "DataError", "MNISTDataModule", "TensorBatches", "count_images", "to_float"]
