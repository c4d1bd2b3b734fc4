"""Metrics the models keep: latent activity over a data set, and running training-loss means."""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import Tensor


class ActiveUnits(torchmetrics.Metric):
    """Latent dims whose code varies over the data set: Var_x[code_d] > threshold.

    For a VAE the code is the posterior mean and a dim below the threshold has
    collapsed to the prior (Burda et al., 2015). Running sums are reduced
    across DDP ranks by torchmetrics.
    """

    full_state_update = False

    def __init__(self, latent_dim: int, threshold: float = 0.01) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("count", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(latent_dim), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros(latent_dim), dist_reduce_fx="sum")

    def update(self, codes: Tensor) -> None:
        codes = codes.detach().float()
        self.count += codes.shape[0]
        self.total += codes.sum(0)
        self.total_sq += codes.square().sum(0)

    def compute(self) -> Tensor:
        mean = self.total / self.count
        variance = self.total_sq / self.count - mean.square()
        return (variance > self.threshold).sum().float()


class CodebookPerplexity(torchmetrics.Metric):
    """exp(entropy) of how often each of `codebook_size` codes is used over a data set: the
    number of codes a VQ-VAE uses, equally often (van den Oord et al., 2017). Updated with code
    indices of any shape; the usage counts are summed across DDP ranks by torchmetrics."""

    full_state_update = False

    def __init__(self, codebook_size: int) -> None:
        super().__init__()
        self.add_state("usage", torch.zeros(int(codebook_size)), dist_reduce_fx="sum")

    def update(self, indices: Tensor) -> None:
        flat = indices.detach().flatten().long()
        self.usage.index_add_(0, flat, torch.ones_like(flat, dtype=self.usage.dtype))

    def compute(self) -> Tensor:
        p = self.usage / self.usage.sum()
        return torch.exp(-torch.special.xlogy(p, p).sum())


class RunningTerms:
    """Per-image loss terms kept by reference per step and summed once per logging interval.

    Reducing them per step, or calling `self.log` per step, would cost a good part of a
    step of the default model; nothing here waits for the device.
    """

    def __init__(self, n_terms: int) -> None:
        self.pending: list[Tensor] = []
        self.interval, self.interval_images = torch.zeros(n_terms), 0
        self.epoch, self.epoch_images = torch.zeros(n_terms), 0

    def add(self, terms: Tensor) -> None:
        """One step's per-image terms `[n_terms, B]`."""
        self.pending.append(terms)

    def _reduce(self) -> None:
        if self.pending:
            sums = torch.cat(self.pending, dim=1).sum(1)
            self.interval = self.interval.to(sums.device) + sums
            self.interval_images += sum(step.shape[1] for step in self.pending)
            self.pending = []

    def take_interval(self) -> Tensor | None:
        """Means over the images since the last call; folds them into the epoch's sums."""
        self._reduce()
        if not self.interval_images:
            return None
        means = self.interval / self.interval_images
        self.epoch = self.epoch.to(self.interval.device) + self.interval
        self.epoch_images += self.interval_images
        self.interval, self.interval_images = torch.zeros_like(self.interval), 0
        return means

    def take_epoch(self) -> Tensor | None:
        self.take_interval()
        return self.epoch / self.epoch_images if self.epoch_images else None

    def state_dict(self) -> dict[str, Any]:
        self._reduce()
        return {
            "interval": self.interval.cpu(),
            "interval_images": self.interval_images,
            "epoch": self.epoch.cpu(),
            "epoch_images": self.epoch_images,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending = []
        self.interval, self.interval_images = state["interval"], state["interval_images"]
        self.epoch, self.epoch_images = state["epoch"], state["epoch_images"]
