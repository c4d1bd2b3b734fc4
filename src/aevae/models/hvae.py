"""Two stochastic layers (Burda, Grosse & Salakhutdinov, 2015, "Importance Weighted Autoencoders",
their two-layer models): the VAE's networks between the image and z1, a second Gaussian layer z2
above it, trained on the ELBO (the two-layer VAE) or the k-sample importance-weighted bound (IWAE).

    q(z1, z2 | x) = q(z1 | x) q(z2 | z1),     p(x, z1, z2) = p(x | z1) p(z1 | z2) N(z2; 0, I).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.losses import log_mean_exp, log_normal
from aevae.models.nets import mlp
from aevae.models.vae import VAE, draw

BOUNDS = ("elbo", "iw")


class HVAE(VAE):
    """A two-layer VAE (`bound=elbo`) or IWAE (`bound=iw`), with `k` draws per image.

    Each draw i goes down the inference network, z1_i ~ q(z1|x), z2_i ~ q(z2|z1_i), and its
    log-weight is

        log w_i = log p(x|z1_i) + log p(z1_i|z2_i) + log p(z2_i) - log q(z1_i|x) - log q(z2_i|z1_i).

    `bound=elbo` minimizes -mean_i log w_i (with `beta` / the KL warm-up on the KL part),
    `bound=iw` -log mean_i w_i. `kl` is the sampled KL of both layers, log q - log p of the
    draws; `neg_elbo` = recon + kl on the same draws under either bound.

    The image side is the `model/net` pair (encoder -> mean and log-variance of z1, decoder
    z1 -> likelihood maps); the z1 <-> z2 nets are MLPs through `hidden_dims_2` (mirrored in
    p(z1|z2)) with `activation_2`. The paper's two-layer MNIST model: 784-100-100-(z1 100)
    -50-50-(z2 50), tanh (see experiment=iwae_paper_hvae).

    Args:
        latent_dim_2: size of z2 (latent_dim is z1's).
        hidden_dims_2: hidden widths of q(z2|z1), z1 first; p(z1|z2) mirrors them.
        activation_2: activation of those MLPs.
        bound: `elbo` or `iw`, the objective.
    """

    standard_prior = False  # over z1: p(z1|z2) N(z2; 0, I)

    def __init__(
        self,
        *args: Any,
        latent_dim_2: int = 16,
        hidden_dims_2: Sequence[int] = (64,),
        activation_2: str = "tanh",
        bound: str = "elbo",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if bound not in BOUNDS:
            raise UserError(f"model.bound={bound!r} is not known; use elbo (the two-layer VAE) or iw (IWAE)")
        if self.free_bits:
            raise UserError(
                "model=hvae samples its KL (log q - log p of the draws), which has no KL per latent dim: "
                "set model.free_bits=0"
            )
        if bound == "iw" and (self.beta != 1 or self.kl_warmup_epochs):
            raise UserError(
                "model=hvae model.bound=iw trains the importance-weighted bound itself: keep "
                "model.beta=1 and model.kl_warmup_epochs=0"
            )
        if int(latent_dim_2) < 1:
            raise UserError(f"model.latent_dim_2={latent_dim_2} must be an integer >= 1")
        self.bound, self.latent_dim_2 = bound, int(latent_dim_2)
        hidden = [int(h) for h in hidden_dims_2]
        self.encoder_2 = mlp([self.latent_dim, *hidden, 2 * self.latent_dim_2], activation_2)
        self.decoder_2 = mlp([self.latent_dim_2, *reversed(hidden), 2 * self.latent_dim], activation_2)

    def latent_draws(
        self, x: Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """`k` draws z1 `[k, B, latent_dim]` down q(z1|x) q(z2|z1), and the KL estimate of each,
        log q(z1|x) + log q(z2|z1) - log p(z1|z2) - log p(z2), `[k, B]`."""
        mu1, log_var1 = self.posterior(x)
        z1 = draw(mu1, log_var1, self.noise((k, *mu1.shape), generator))
        mu2, log_var2 = self.encoder_2(z1).chunk(2, dim=-1)
        z2 = draw(mu2, log_var2, self.noise(mu2.shape, generator))
        prior_mu1, prior_log_var1 = self.decoder_2(z2).chunk(2, dim=-1)
        standard = z2.new_zeros(())  # N(0, I): zero mean and log-variance, broadcast
        log_q = log_normal(z1, mu1, log_var1) + log_normal(z2, mu2, log_var2)
        log_p = log_normal(z1, prior_mu1, prior_log_var1) + log_normal(z2, standard, standard)
        return z1, log_q - log_p

    def draws(
        self, x: Tensor, k: int, target: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """The reconstruction NLL -log p(target|z1_i) (target defaults to `x`) and the KL estimate
        of `k` draws, `[k, B]` each: their sum is -log w_i."""
        z1, kl = self.latent_draws(x, k, generator)
        logits = self.decode(z1.flatten(0, 1)).unflatten(0, (k, len(x)))
        return self.likelihood.of_draws(logits, x if target is None else target), kl

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        recon_draws, kl_draws = self.draws(x, self.k, target, generator)
        recon, kl = recon_draws.mean(0), kl_draws.mean(0)
        neg_elbo = recon + kl
        if self.bound == "iw":
            loss = -log_mean_exp(-(recon_draws + kl_draws))
        else:
            weight = self.kl_weight if self.training else self.beta
            loss = neg_elbo if weight == 1 else recon + weight * kl
        return {"loss": loss, "recon": recon, "kl": kl, "neg_elbo": neg_elbo}

    def log_weights(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """log p(x, z1_i, z2_i) - log q(z1_i, z2_i | x) for `k` draws `[k, B]`."""
        recon, kl = self.draws(x, k, generator=generator)
        return -(recon + kl)

    def prior_codes(
        self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """`n` ancestral draws z2 ~ N(0, I), z1 ~ p(z1|z2): codes z1 `[n, latent_dim]`."""
        z2 = self.noise((n, self.latent_dim_2), generator)
        mu1, log_var1 = self.decoder_2(z2).chunk(2, dim=-1)
        return draw(mu1, log_var1, self.noise(mu1.shape, generator))

    def noise(self, shape: Sequence[int], generator: torch.Generator | None) -> Tensor:
        """Standard-normal noise of `shape` on the model's device, from `generator` when given."""
        return torch.randn(tuple(shape), generator=generator, device=self.device)
