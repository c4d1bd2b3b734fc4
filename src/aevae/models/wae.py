"""Wasserstein autoencoder, WAE-MMD (Tolstikhin, Bousquet, Gelly & Schoelkopf, 2018): a deterministic
autoencoder whose aggregate code distribution is pulled to the prior N(0, I) by an MMD penalty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.models.ae import AE

#: Multiples of the base scale 2 d of the IMQ kernel, as in the paper's reference code.
SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def imq_kernel(a: Tensor, b: Tensor, scales: Sequence[float] = SCALES) -> Tensor:
    """sum_s C_s / (C_s + ||a_i - b_j||^2) with C_s = 2 d s, for codes `a [n, d]`, `b [m, d]`: `[n, m]`
    (the inverse multiquadratic kernel at several scales; 2 d is E||z - z'||^2 under N(0, I))."""
    distances = torch.cdist(a, b).square()
    base = 2.0 * a.shape[1]
    return sum(base * s / (base * s + distances) for s in scales)


def mmd(codes: Tensor, prior: Tensor) -> Tensor:
    """The unbiased estimate (a U-statistic) of MMD^2 between the distributions of `codes [n, d]`
    and `prior [m, d]` under `imq_kernel`: the within-sample means leave out the diagonals (i = j)."""
    n, m = len(codes), len(prior)  # a batch of one has no pair: its within-sample mean counts as 0
    within_codes = imq_kernel(codes, codes).fill_diagonal_(0).sum() / max(n * (n - 1), 1)
    within_prior = imq_kernel(prior, prior).fill_diagonal_(0).sum() / max(m * (m - 1), 1)
    return within_codes + within_prior - 2 * imq_kernel(codes, prior).mean()


class WAE(AE):
    """loss = recon + mmd_weight * MMD^2(q(z), N(0, I)), MMD on the batch's codes against as many
    prior draws.

    MMD is a statistic of the whole batch: its per-image term `mmd` is the batch's estimate
    repeated for every image (so the batch mean of `loss` is the objective).
    """

    term_names = ("loss", "recon", "mmd")
    has_prior = standard_prior = True

    def __init__(self, *args: Any, mmd_weight: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not mmd_weight >= 0:
            raise UserError(f"model.mmd_weight={mmd_weight} must be a number >= 0")
        self.mmd_weight = float(mmd_weight)

    def prior_codes(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        z = self.encode(x)
        recon = self.likelihood(self.decode(z), x if target is None else target)
        distance = mmd(z, self.prior_codes(len(z), generator)).expand(len(z))
        return {"loss": recon + self.mmd_weight * distance, "recon": recon, "mmd": distance}
