"""Mini-batches sliced from one device-resident uint8 tensor.

MNIST-sized data fits on any device (47 MB as uint8), so the fast path keeps a
whole split there and cuts batches with one gather per step: no per-sample
PIL/ToTensor work, no worker processes, no host-to-device copy per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DistributedSampler, Sampler, SequentialSampler

from aevae.rng import keyed_generator

#: `(inputs, labels)`, or `(noisy inputs, labels, clean targets)` when the data are corrupted.
Batch = tuple[torch.Tensor, ...]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1], on whatever device they are."""
    return images.to(torch.float32).div_(255)  # exactly as torchvision.transforms.ToTensor


def binarize(x: torch.Tensor, key: tuple[int, ...]) -> torch.Tensor:
    """x ~ Bernoulli(x), from a generator seeded by `key` alone: the same draw for the same
    (seed, epoch, position), so a resumed run sees exactly the images it would have seen."""
    generator = keyed_generator(key, x.device)
    return torch.bernoulli(x, generator=generator)


def count_images(item: Batch | list[Batch]) -> int:
    """Images in one item of a TensorBatches: a batch or a chunk of batches."""
    return sum(len(batch[0]) for batch in item) if isinstance(item, list) else len(item[0])


class TensorBatches:
    """An iterable of `(x, y)` batches over `images[sampler order]`.

    Ordering is delegated to a torch `Sampler`: `DistributedSampler` for
    training (seeded per epoch, sharded over ranks with the exact semantics
    Lightning users know), `SequentialSampler` for evaluation. Lightning finds
    `.sampler.set_epoch` and calls it every epoch, as it does for a DataLoader
    (`batch_sampler` is None, as on a DataLoader with a batch_size).

    With `steps_per_chunk=K > 1` each item is a *chunk*: a list of up to K
    consecutive batches, cut from one gather and one conversion, which the
    model trains on with K optimizer steps in one `training_step` (see
    `Autoencoder.training_step`). `len()` counts items, as Lightning expects.

    With `corrupt` (a :class:`aevae.data.noise.Corruption`) each batch is
    `(noisy, labels, clean)`: the noise is drawn on the device, seeded by the
    epoch and the batch's position, so it is the same again after a resume
    and whatever `steps_per_chunk` is.
    """

    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        sampler: Sampler[int] | range | None = None,
        drop_last: bool = False,
        steps_per_chunk: int = 1,
        progress: Callable[[], int] | None = None,
        binarize_seed: int | None = None,
        corrupt: Callable[..., torch.Tensor] | None = None,
        device: torch.device | None = None,
    ) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(f"TensorBatches expects uint8 images, got {images.dtype}")
        self.images, self.labels = images, labels
        self.batch_size, self.steps_per_chunk = batch_size, steps_per_chunk
        self.sampler = sampler if sampler is not None else SequentialSampler(range(len(images)))
        self.drop_last = drop_last
        self.progress = progress  # items the trainer has finished this epoch, for state_dict
        self.binarize_seed = binarize_seed  # set: pixels resampled as Bernoulli draws each time
        self.corrupt = corrupt
        #: Where batches are delivered; images elsewhere (pinned host memory) are copied per chunk.
        self.device = images.device if device is None else torch.device(device)
        self._resume: tuple[int, int] | None = None

    @property
    def num_samples(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    @property
    def num_batches(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __len__(self) -> int:
        return -(-self.num_batches // self.steps_per_chunk)

    # -- a killed run resumes mid-epoch at the item where its checkpoint was taken --
    def state_dict(self) -> dict[str, int]:
        epoch = getattr(self.sampler, "epoch", 0)
        return {"epoch": epoch, "position": self.progress() if self.progress is not None else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (state["epoch"], state["position"])

    def __iter__(self) -> Iterator[Batch | list[Batch]]:
        skip, epoch = 0, getattr(self.sampler, "epoch", 0)
        if self._resume is not None and self._resume[0] == epoch:
            skip = self._resume[1]
        self._resume = None
        order = None
        if not isinstance(self.sampler, SequentialSampler):  # sequential: slices are views, no gather
            order = torch.tensor(list(self.sampler), dtype=torch.long).to(self.images.device)
        streams = self.images.device != self.device  # labels live on self.device, images on the host
        stop = min(self.num_batches * self.batch_size, self.num_samples)
        span = self.batch_size * self.steps_per_chunk
        for start in range(skip * span, stop, span):
            where = slice(start, min(start + span, stop))
            if order is not None:
                where = order[where]
            x, y = self.images[where], self.labels[where]
            if streams:  # gathered on the host, copied from pinned memory while the device still works
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = to_float(x)
            if self.binarize_seed is not None:
                x = binarize(x, (self.binarize_seed, getattr(self.sampler, "epoch", 0), start))
            batches = list(zip(x.split(self.batch_size), y.split(self.batch_size), strict=True))
            if self.corrupt is not None:  # seeded per batch: the same noise whatever the chunk size
                firsts = range(start, start + len(x), self.batch_size)  # each batch's position
                batches = [
                    (self.corrupt(bx, epoch, i), by, bx) for i, (bx, by) in zip(firsts, batches, strict=True)
                ]
            yield batches if self.steps_per_chunk > 1 else batches[0]


def shuffled(n: int, seed: int, num_replicas: int = 1, rank: int = 0) -> DistributedSampler:
    """Seeded, per-epoch reshuffled order of `range(n)`, sharded like DDP's sampler."""
    return DistributedSampler(
        range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
