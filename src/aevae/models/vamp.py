"""VAE with a VampPrior (Tomczak & Welling, 2018, "VAE with a VampPrior"): the prior is the
mixture of the encoder's own posteriors at K learned pseudo-inputs u_k,

    p(z) = 1/K sum_k q(z | u_k),

so the prior is learned with the model and fits the aggregate posterior it is pulled towards.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aevae.config import UserError
from aevae.losses import LOG_2PI, log_normal
from aevae.models.vae import VAE, draw


class VampVAE(VAE):
    """The VAE's networks and Gaussian posterior q(z|x), with the VampPrior.

    Trains on the negative ELBO per image, the KL estimated on the same posterior draws as the
    reconstruction (it has no closed form under a mixture prior):

        -ELBO = E_q(z|x) [-log p(x|z) + log q(z|x) - log p(z)],
        log p(z) = log mean_k N(z; mu(u_k), sigma^2(u_k)).

    The pseudo-inputs are image-shaped parameters through a hardtanh to [0, 1],
    u_k = min(max(w_k, 0), 1), with w_k ~ N(`pseudo_init_mean`, `pseudo_init_std`^2) at the start
    (the paper's reference code: 0.05 and 0.01). `beta` and the KL warm-up weigh the sampled KL;
    free bits need a KL per latent dim, which a mixture prior does not have.

    Args:
        pseudo_inputs: K, the number of pseudo-inputs (mixture components); the paper uses 500.
        pseudo_init_mean, pseudo_init_std: the normal the pseudo-inputs' parameters start from.
    """

    standard_prior = False  # the mixture of the pseudo-inputs' posteriors

    def __init__(
        self,
        *args: Any,
        pseudo_inputs: int = 500,
        pseudo_init_mean: float = 0.05,
        pseudo_init_std: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.free_bits:
            raise UserError(
                "model=vamp samples its KL (a mixture prior has no KL per latent dim), so it has no "
                "free bits: set model.free_bits=0"
            )
        if int(pseudo_inputs) < 1:
            raise UserError(f"model.pseudo_inputs={pseudo_inputs} must be an integer >= 1 (the paper: 500)")
        init = torch.randn(int(pseudo_inputs), *self.image_shape) * pseudo_init_std + pseudo_init_mean
        self.pseudo_weights = nn.Parameter(init)

    def pseudo_images(self) -> Tensor:
        """The K pseudo-inputs u_k `[K, C, H, W]`, in [0, 1] like the data."""
        return F.hardtanh(self.pseudo_weights, 0.0, 1.0)

    def components(self) -> tuple[Tensor, Tensor]:
        """Means and log-variances `[K, d]` of the prior's components q(z | u_k)."""
        return self.posterior(self.pseudo_images())

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) = log mean_k q(z | u_k) for codes `z [..., d]`: `[...]`."""
        mu, log_var = self.components()
        flat = z.reshape(-1, z.shape[-1])
        # sum_d (z_d - mu_kd)^2 / var_kd as matmuls, [N, d] x [d, K], not an [N, K, d] tensor (that is
        # memory-bound: minutes for the millions of draws of aevae-eval); in float64, where expanding
        # the square loses nothing (float32 or TF32 would cancel large terms) and autocast keeps it
        wide = torch.float32 if z.device.type == "mps" else torch.float64  # MPS has no float64
        flat, mean, precision = flat.to(wide), mu.to(wide), (-log_var).exp().to(wide)
        squares = (
            flat.square() @ precision.T - 2 * flat @ (mean * precision).T + (mean.square() * precision).sum(1)
        )
        log_q = -0.5 * (LOG_2PI * mu.shape[1] + log_var.to(wide).sum(1) + squares)  # [N, K]
        return (torch.logsumexp(log_q, dim=1) - math.log(len(mu))).to(z.dtype).view(z.shape[:-1])

    def latent_draws(
        self, x: Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """`k` reparameterized draws z ~ q(z|x) `[k, B, d]` and their KL estimates
        log q(z|x) - log p(z) `[k, B]`."""
        mu, log_var = self.posterior(x)
        noise = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        z = draw(mu, log_var, noise)
        return z, log_normal(z, mu, log_var) - self.log_prior(z)

    def draws(
        self, x: Tensor, k: int, target: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """The reconstruction NLL of `target` (default: `x`) and the KL estimate of `k` posterior
        draws, `[k, B]` each: -log p(x|z_i) and log q(z_i|x) - log p(z_i)."""
        z, kl = self.latent_draws(x, k, generator)
        logits = self.decode(z.flatten(0, 1)).unflatten(0, (k, len(x)))
        return self.likelihood.of_draws(logits, x if target is None else target), kl

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        recon, kl = (t.mean(0) for t in self.draws(x, self.k, target, generator))
        neg_elbo = recon + kl
        weight = self.kl_weight if self.training else self.beta
        loss = neg_elbo if weight == 1 else recon + weight * kl
        return {"loss": loss, "recon": recon, "kl": kl, "neg_elbo": neg_elbo}

    def log_weights(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """log p(x|z_i) + log p(z_i) - log q(z_i|x) for `k` draws `[k, B]`, p(z) the VampPrior."""
        recon, kl = self.draws(x, k, generator=generator)
        return -(recon + kl)

    def prior_codes(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """`n` draws of the mixture `[n, d]`: a pseudo-input k uniformly, then z ~ q(z | u_k)."""
        mu, log_var = self.components()
        index = torch.randint(len(mu), (n,), generator=generator, device=mu.device)
        noise = torch.randn(n, self.latent_dim, generator=generator, device=mu.device, dtype=mu.dtype)
        return draw(mu[index], log_var[index], noise)
