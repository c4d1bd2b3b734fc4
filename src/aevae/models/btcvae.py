"""β-TCVAE (Chen, Li, Grosse & Duvenaud, 2018): the VAE whose KL is split into index-code mutual
information, total correlation and dimension-wise KL, with the total correlation weighted by beta."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.losses import kl_std_normal
from aevae.models.vae import VAE, draw

LOG_2PI = math.log(2 * math.pi)
#: Draws per block of the [draws, M, d] densities of `kl_decomposition` (training batches: one block).
ROWS = 128


def log_normal(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mu, exp(log_var)) per dimension (broadcasting)."""
    return -0.5 * (LOG_2PI + log_var + (z - mu).square() / log_var.exp())


def pairwise_log_density(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log q(z_i,k | x_j) for every draw i `z [M, d]` under every posterior j `(mu, log_var) [M, d]`:
    `[M, M, d]`."""
    return log_normal(z[:, None], mu[None], log_var[None])


def stratified_log_weights(
    batch: int, dataset_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """log w_ij `[M, M]` of minibatch stratified sampling: q(z_i) ~ sum_j w_ij q(z_i | x_j) with the own
    image weighted 1/N and each of the M - 1 others (N - 1) / (N (M - 1)) (rows sum to 1).

    q(z) = 1/N q(z|x_i) + 1/N sum_{n != i} q(z|x_n), and the other images of a batch are draws of the
    remaining N - 1. Chen et al.'s appendix C.2 weighs one of the others differently, an artefact of
    batches drawn without replacement that changes the weights by O(1/M).
    """
    if batch == 1:
        return torch.zeros(1, 1, device=device, dtype=dtype)
    other = math.log((dataset_size - 1) / (dataset_size * (batch - 1)))
    weights = torch.full((batch, batch), other, device=device, dtype=dtype)
    return weights.fill_diagonal_(-math.log(dataset_size))


ESTIMATORS = ("mss", "mws")


def log_weights(
    batch: int,
    dataset_size: int,
    estimator: str,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """`stratified_log_weights` (mss), or minibatch-weighted sampling's (mws, Chen et al.'s eq. in
    appendix C.1): every image of the batch weighted 1/(N M), the own one too."""
    if estimator == "mss":
        return stratified_log_weights(batch, dataset_size, device, dtype)
    return torch.full((batch, batch), -math.log(dataset_size * batch), device=device, dtype=dtype)


def kl_decomposition(
    z: Tensor, mu: Tensor, log_var: Tensor, dataset_size: int, estimator: str = "mss"
) -> dict[str, Tensor]:
    """The per-draw terms `[M]` of E_q[log q(z|x) - log p(z)] = MI + TC + dimension-wise KL, for
    draws `z [M, d]` of the posteriors `(mu, log_var) [M, d]` of a minibatch of M images out of N:

    mi = log q(z|x) - log q(z), tc = log q(z) - sum_k log q(z_k), dwkl = sum_k log q(z_k) - log p(z),

    where the aggregate posterior q(z) and its marginals q(z_k) are estimated on the minibatch by
    stratified sampling (`stratified_log_weights`), or with `estimator="mws"` by minibatch-weighted
    sampling (`log_weights`). The three sum to log q(z|x) - log p(z) exactly.
    """
    log_w = log_weights(len(z), dataset_size, estimator, z.device, z.dtype)
    log_qz, log_prod_marginals = [], []
    for rows in range(0, len(z), ROWS):  # [ROWS, M, d] at a time: a large batch stays in the cache
        pairs = pairwise_log_density(z[rows : rows + ROWS], mu, log_var)
        weights = log_w[rows : rows + ROWS]
        log_qz.append(torch.logsumexp(weights + pairs.sum(2), dim=1))
        log_prod_marginals.append(torch.logsumexp(weights[:, :, None] + pairs, dim=1).sum(1))
    log_qz, log_prod_marginals = torch.cat(log_qz), torch.cat(log_prod_marginals)
    log_qz_x = log_normal(z, mu, log_var).sum(1)
    log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    return {"mi": log_qz_x - log_qz, "tc": log_qz - log_prod_marginals, "dwkl": log_prod_marginals - log_pz}


@torch.no_grad()
def total_correlation(
    model: Any,
    images: Tensor,
    batch_size: int = 500,
    dataset_size: int | None = None,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> float:
    """Mean total correlation (nats) of the aggregate posterior of any model with a Gaussian
    `posterior(x) -> (mu, log_var)` on `images [N, C, H, W]`: one draw per image, estimated per
    batch of `batch_size` by the β-TCVAE's stratified estimator with N = `dataset_size` (default:
    the number of images); `labels [N]` reach a conditional model's posterior."""
    total, n = 0.0, dataset_size or len(images)
    for i, x in enumerate(images.split(batch_size)):
        y = None if labels is None else labels[i * batch_size : (i + 1) * batch_size]
        mu, log_var = model.posterior(x, y)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        total += kl_decomposition(draw(mu, log_var, noise), mu, log_var, n)["tc"].sum().item()
    return total / len(images)


class BetaTCVAE(VAE):
    """loss = recon + MI + beta * TC + dimension-wise KL (the paper's alpha = gamma = 1), the three
    estimated on each minibatch as `kl_decomposition` says with N = `dataset_size` (the training set:
    MNIST's 60k by default) and `estimator` (mss: stratified, mws: minibatch-weighted); with beta = 1
    the loss is the one-draw negative ELBO.

    `mi`, `tc` and `dwkl` are batch estimates (each image's term depends on the other images of its
    batch); `kl` and `neg_elbo` are the VAE's, with the analytic KL, so the bounds compare with other
    models. `kl_warmup_epochs` ramps all three terms up from 0.
    """

    term_names = ("loss", "recon", "kl", "neg_elbo", "mi", "tc", "dwkl")

    def __init__(
        self, *args: Any, beta: float = 6.0, dataset_size: int = 60_000, estimator: str = "mss", **kwargs: Any
    ) -> None:
        super().__init__(*args, beta=beta, **kwargs)
        if self.k != 1 or self.free_bits:
            raise UserError(
                "model=btcvae estimates its KL terms from one draw per image and has no per-dim KL to "
                "floor: keep model.k=1 and model.free_bits=0"
            )
        if dataset_size < 2:
            raise UserError(f"model.dataset_size={dataset_size} must be the training set's size (>= 2)")
        if estimator not in ESTIMATORS:
            raise UserError(
                f"model.estimator={estimator!r} is not known; use mss (stratified) or mws (weighted)"
            )
        self.dataset_size, self.estimator = int(dataset_size), estimator
        self.warmup = 1.0  # the KL terms' weight factor during kl_warmup_epochs

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        mu, log_var = self.posterior(x)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = draw(mu, log_var, noise)
        recon = self.likelihood(self.decode(z), x if target is None else target)
        parts = kl_decomposition(z, mu, log_var, self.dataset_size, self.estimator)
        kl = kl_std_normal(mu, log_var)
        penalty = parts["mi"] + self.beta * parts["tc"] + parts["dwkl"]
        loss = recon + (self.warmup if self.training else 1.0) * penalty
        return {"loss": loss, "recon": recon, "kl": kl, "neg_elbo": recon + kl, **parts}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if self.kl_warmup_epochs:
            self.warmup = min(1.0, self.training_progress() / self.kl_warmup_epochs)

    def graph_values(self) -> tuple[float, ...] | None:
        """The warm-up factor is baked into a captured step: eager steps while it ramps up."""
        return None if self.warmup != 1 else (self.warmup,)
