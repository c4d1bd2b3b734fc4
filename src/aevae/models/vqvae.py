"""Vector-quantized autoencoder: a grid of codes, each the nearest of K learned vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.losses import pixel_mse
from aevae.metrics import CodebookPerplexity
from aevae.models.base import Autoencoder


class VQVAE(Autoencoder):
    """VQ-VAE (van den Oord et al., 2017, "Neural Discrete Representation Learning").

    The encoder maps an image to a grid z_e(x) `[B, D, h, w]` (D = `latent_dim`, 7x7 at 28 px);
    each grid vector is replaced by its nearest codebook vector e_k (K = `codebook_size`), and
    the decoder reconstructs from that grid z_q(x). Per image,

        loss = -log p(x | z_q(x)) + beta * sum_{i,j} ||z_e(x)_ij - sg[z_q(x)_ij]||^2,

    the decoder's gradient copied straight through the quantization to the encoder. The codebook
    is no parameter: it is an exponential moving average (decay gamma) of the encoder outputs
    assigned to each code (the paper's appendix A.1, sonnet's VectorQuantizerEMA):

        N_k <- gamma N_k + (1 - gamma) n_k,  m_k <- gamma m_k + (1 - gamma) sum_{z_e -> k} z_e,
        e_k = m_k / N~_k,  N~_k = (N_k + eps) / (n + K eps) * n  (Laplace smoothing, n = sum_k N_k).

    A code whose N_k falls below `restart_threshold` (dead: hardly ever chosen) is restarted at a
    random encoder output of the current batch (as in Jukebox, Dhariwal et al. 2020); 0 disables it.

    `encode` gives the quantized grid flattened, `[B, D * h * w]`, and `decode` takes such a code,
    so every latent-space tool works on it; `prior_codes` draws codes uniformly over the grid (a
    learned prior is `model=vq_prior`, trained on this model's codes).
    """

    term_names = ("loss", "recon", "commitment")
    has_prior = True

    def __init__(
        self,
        *args: Any,
        codebook_size: int = 512,
        commitment: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        restart_threshold: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if int(codebook_size) < 2 or not 0 <= float(decay) < 1:
            raise UserError(
                f"model.codebook_size={codebook_size} must be >= 2 and model.decay={decay} in [0, 1)"
            )
        self.codebook_size, self.commitment = int(codebook_size), float(commitment)
        self.decay, self.epsilon = float(decay), float(epsilon)
        self.restart_threshold = float(restart_threshold)
        codebook = torch.randn(self.codebook_size, self.latent_dim)
        self.register_buffer("codebook", codebook)  # e_k `[K, D]`
        # counts start at one and sums at the codes: an unused code keeps its place instead of
        # being divided by the smoothing's tiny count
        self.register_buffer("ema_count", torch.ones(self.codebook_size))  # N_k
        self.register_buffer("ema_sum", codebook.clone())  # m_k
        self.add_metric("perplexity", lambda: CodebookPerplexity(self.codebook_size))
        self._stash: tuple[Tensor, Tensor] | None = None  # a training step's encoder outputs and codes

    def build(self, nets: Any, out_channels: int) -> None:
        if not hasattr(nets, "spatial_encoder"):
            raise UserError(
                "model=vqvae needs a spatial code grid, which model/net=mlp has not; use model/net=conv "
                "(or model/net=resnet)"
            )
        self.grid: tuple[int, int] = tuple(nets.grid)
        self.encoder = nets.spatial_encoder(self.latent_dim)
        self.decoder = nets.spatial_decoder(self.latent_dim, out_channels)

    # -- the code grid ------------------------------------------------------------------------
    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """The nearest codebook vectors of a grid `[B, D, h, w]` (same shape), their indices `[B, h, w]`."""
        flat = z_e.movedim(1, -1).reshape(-1, self.latent_dim)
        distances = (
            flat.square().sum(1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.square().sum(1)
        )
        indices = distances.argmin(1).view(z_e.shape[0], *z_e.shape[2:])
        return self.codebook[indices].movedim(-1, 1), indices

    def indices(self, x: Tensor) -> Tensor:
        """The code indices `[B, h, w]` of images `x`."""
        return self.quantize(self.encoder(x))[1]

    def codes_of(self, indices: Tensor) -> Tensor:
        """The flat code `[B, D * h * w]` of an index grid `[B, h, w]`."""
        return self.codebook[indices].movedim(-1, 1).flatten(1)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The quantized grid of `x`, flattened: `[B, D * h * w]`."""
        return self.quantize(self.encoder(x))[0].flatten(1)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits for flat codes `[B, D * h * w]` (any values: interpolations are no codebook vectors)."""
        return self.decoder(z.view(len(z), self.latent_dim, *self.grid))

    def prior_codes(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """Flat codes `[n, D * h * w]` of independent, uniformly drawn indices at every grid position."""
        indices = torch.randint(self.codebook_size, (n, *self.grid), generator=generator, device=self.device)
        return self.codes_of(indices)

    # -- training -----------------------------------------------------------------------------
    def _reconstruct(self, x: Tensor, target: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """The terms, logits, quantized grid and indices of `x`."""
        z_e = self.encoder(x)
        z_q, indices = self.quantize(z_e)
        if self.training:  # the codebook's update after the optimizer step reads them
            self._stash = (z_e.detach().movedim(1, -1).reshape(-1, self.latent_dim), indices.flatten())
        logits = self.decoder(z_e + (z_q - z_e).detach())  # straight through: d loss/d z_q reaches z_e
        recon = self.likelihood(logits, target)
        commitment = self.commitment * (z_e - z_q).square().flatten(1).sum(1)
        return {"loss": recon + commitment, "recon": recon, "commitment": commitment}, logits, z_q, indices

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        return self._reconstruct(x, x if target is None else target)[0]  # deterministic: no noise

    def after_step(self) -> None:
        if self._stash is not None:
            self.update_codebook(*self._stash)
            self._stash = None

    @torch.no_grad()
    def update_codebook(self, z_e: Tensor, indices: Tensor) -> None:
        """One EMA step of the codebook from encoder outputs `z_e [N, D]` assigned to codes
        `indices [N]`, summed over DDP ranks, then the restart of dead codes."""
        k, d = self.codebook_size, self.latent_dim
        # restart candidates, drawn before the reduction: rank 0's, so that every rank agrees
        candidates = z_e[torch.randint(len(z_e), (k,), device=z_e.device)]
        stats = torch.zeros(k, 2 * d + 1, device=z_e.device, dtype=self.ema_sum.dtype)
        stats[:, :d].index_add_(0, indices, z_e.to(stats.dtype))
        stats[:, d].index_add_(0, indices, torch.ones_like(indices, dtype=stats.dtype))
        stats[:, d + 1 :] = candidates * float(self.global_rank == 0)
        stats = self.sum_over_ranks(stats)  # one all-reduce a step
        sums, counts, candidates = stats[:, :d], stats[:, d], stats[:, d + 1 :]
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.epsilon) / (total + k * self.epsilon) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        dead = (self.ema_count < self.restart_threshold)[:, None]  # tensors only: no host sync, capturable
        self.codebook.copy_(torch.where(dead, candidates, self.codebook))
        self.ema_sum.copy_(torch.where(dead, candidates, self.ema_sum))
        self.ema_count.copy_(torch.where(dead[:, 0], torch.ones_like(self.ema_count), self.ema_count))

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(
        self, batch: Sequence[Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        x, target, _ = self.unpack(batch)
        values, logits, z_q, indices = self._reconstruct(x, target)
        values["mse"] = pixel_mse(self.likelihood.mean(logits), target)
        values["bce"] = self.likelihood.bce(logits, target)
        # the D embedding dims that vary over images and grid positions
        values["active_units"] = z_q.movedim(1, -1).reshape(-1, self.latent_dim)
        values["perplexity"] = indices
        return values
