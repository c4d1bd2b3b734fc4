"""Data: every image data set as device-resident uint8 tensors."""

from aevae.data.batches import TensorBatches, count_images, to_float
from aevae.data.datamodule import DATASETS, ImageDataModule, MNISTDataModule
from aevae.data.idx import DataError

__all__ = [
    "DATASETS",
    "DataError",
    "ImageDataModule",
    "MNISTDataModule",
    "TensorBatches",
    "count_images",
    "to_float",
]
