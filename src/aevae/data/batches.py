"""Mini-batches sliced from one device-resident uint8 tensor.

MNIST-sized data fits on any device (47 MB as uint8), so the fast path keeps a
whole split there and cuts batches with one gather per step: no per-sample
PIL/ToTensor work, no worker processes, no host-to-device copy per step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler, Sampler, SequentialSampler

Batch = tuple[torch.Tensor, torch.Tensor]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1], on whatever device they are."""
    return images.to(torch.float32).div_(255)  # exactly as torchvision.transforms.ToTensor


class TensorBatches:
    """An iterable of `(x, y)` batches over `images[sampler order]`.

    Ordering is delegated to a torch `Sampler`: `DistributedSampler` for
    training (seeded per epoch, sharded over ranks with the exact semantics
    Lightning users know), `SequentialSampler` for evaluation. Lightning finds
    `.sampler.set_epoch` and calls it every epoch, as it does for a DataLoader
    (`batch_sampler` is None, as on a DataLoader with a batch_size).
    The sampler yields indices on the host once per epoch; each step is then a
    device-side gather plus a uint8->float conversion.
    """

    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        sampler: Sampler[int] | None = None,
        drop_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(f"TensorBatches expects uint8 images, got {images.dtype}")
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.sampler = sampler if sampler is not None else SequentialSampler(range(len(images)))
        self.drop_last = drop_last
        self._sequential = isinstance(self.sampler, SequentialSampler)

    @property
    def num_samples(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[Batch]:
        if self._sequential:  # contiguous slices are views: no gather at all
            for start in range(0, len(self) * self.batch_size, self.batch_size):
                stop = start + self.batch_size
                yield to_float(self.images[start:stop]), self.labels[start:stop]
            return
        order = torch.tensor(list(self.sampler), dtype=torch.long).to(self.images.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield to_float(self.images[idx]), self.labels[idx]


def shuffled(n: int, seed: int, num_replicas: int = 1, rank: int = 0) -> DistributedSampler:
    """Seeded, per-epoch reshuffled order of `range(n)`, sharded like DDP's sampler."""
    return DistributedSampler(
        range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
