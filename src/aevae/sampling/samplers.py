"""Where the codes of generated images come from (the `sampler` config group).

A sampler is fitted to codes `[N, ...]` of training images (`fit`), then draws `n` new codes of
the same shape (`sample`). Codes of any shape (an MLP's vectors, a conv net's grids) are flattened
to `[N, D]` to fit and drawn ones reshaped back.

- `prior`: the model's own prior (`model.prior_codes`); a model trained without one refuses it.
- `gaussian`: a full-covariance Gaussian fitted to the codes.
- `gmm`: a Gaussian mixture fitted to the codes by EM on their device: the ex-post density
  estimation of Ghosh et al. (2020, "From variational to deterministic autoencoders"), as in pythae.
- `auto`: `prior` where the model has one, else `gaussian`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.sampling.latents import fit_gaussian, gaussian_draws
from aevae.validation import GMM_INITS, SAMPLERS


class Sampler:
    """Draws codes for generation. `fits`: whether `sample` needs `fit` first (training codes)."""

    fits = True

    def __init__(self) -> None:
        self.code_shape: tuple[int, ...] | None = None

    def fit(self, codes: Tensor) -> Sampler:
        """Fit to the codes `[N, ...]` of training images; returns the sampler."""
        self.code_shape = tuple(codes.shape[1:])
        self.fit_flat(codes.flatten(1))
        return self

    def fit_flat(self, codes: Tensor) -> None:
        raise NotImplementedError

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """`n` codes `[n, ...]`, drawn with `generator` (on the codes' device); `labels` `[n]` reach
        a conditional model's prior (a sampler fitted to codes ignores them)."""
        if self.code_shape is None:
            raise RuntimeError(f"{type(self).__name__}.sample before fit")
        return self.sample_flat(n, generator).reshape(n, *self.code_shape)

    def sample_flat(self, n: int, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError


class PriorSampler(Sampler):
    """The model's own prior: `model.prior_codes(n, generator, labels)`."""

    fits = False

    def __init__(self, model: Any) -> None:
        super().__init__()
        if not model.has_prior:
            raise UserError(
                f"sampler=prior: model={type(model).__name__.lower()} has no prior to sample codes from; "
                "use sampler=gaussian or sampler=gmm (fitted to the training codes)"
            )
        self.model = model

    def fit(self, codes: Tensor) -> Sampler:
        return self

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None
    ) -> Tensor:
        return self.model.prior_codes(n, generator, labels)


class GaussianSampler(Sampler):
    """A full-covariance Gaussian fitted to the codes; draws `mean + noise @ factor.T` from
    standard-normal `noise`."""

    def fit_flat(self, codes: Tensor) -> None:
        self.mean, self.factor = fit_gaussian(codes)

    def sample_flat(self, n: int, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(
            n, len(self.mean), generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return gaussian_draws(noise, self.mean, self.factor)


class GMMSampler(Sampler):
    """A mixture of `components` full-covariance Gaussians fitted to the codes by EM.

    EM runs in torch on the codes' device, in float64 (float32 on MPS, which has none):
    scikit-learn's GaussianMixture would move the codes to the host and fit there in NumPy,
    where this is a few matrix products per component and iteration on the GPU. Every
    covariance gets `ridge` times the identity added (as scikit-learn's `reg_covar`), which
    keeps it invertible for collapsed components and dead code units. The means start from
    `init`: k-means++ seeding (Arthur & Vassilvitskii 2007) or `components` random codes, from a
    generator seeded with `seed`; EM stops after `iterations` or once the mean log-likelihood
    per code rises by less than `tolerance` nats.

    `log_likelihoods`: the mean log-likelihood per code at each E-step, in order (EM raises it).
    """

    def __init__(
        self,
        components: int = 10,
        iterations: int = 100,
        tolerance: float = 1e-3,
        ridge: float = 1e-6,
        init: str = "kmeans++",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not (components >= 1 and iterations >= 1 and ridge > 0 and init in GMM_INITS):
            raise UserError(
                f"sampler=gmm with components={components}, iterations={iterations}, ridge={ridge}, "
                f"init={init!r}: expected components and iterations >= 1, ridge > 0, init one of "
                f"{', '.join(GMM_INITS)}"
            )
        self.components, self.iterations = int(components), int(iterations)
        self.tolerance, self.ridge, self.init, self.seed = float(tolerance), float(ridge), init, int(seed)
        self.log_likelihoods: list[float] = []

    def fit_flat(self, codes: Tensor) -> None:
        if len(codes) < self.components:
            raise UserError(
                f"sampler.components={self.components} is more than the {len(codes)} codes it is fitted "
                "to; use fewer components or fit to more images"
            )
        self.dtype = codes.dtype
        x = codes.float() if codes.device.type == "mps" else codes.double()  # MPS has no float64
        generator = torch.Generator(x.device).manual_seed(self.seed)
        self.m_step(x, self.initial_responsibilities(x, generator))
        self.log_likelihoods = history = []
        for _ in range(self.iterations):
            log_resp, log_likelihood = self.e_step(x)
            history.append(log_likelihood.item())  # one host sync per EM iteration
            if len(history) > 1 and history[-1] - history[-2] < self.tolerance:
                break
            self.m_step(x, log_resp.exp())

    def initial_responsibilities(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """One-hot assignments `[N, K]` of the codes to their nearest starting mean."""
        if self.init == "random":
            centers = x[torch.randperm(len(x), generator=generator, device=x.device)[: self.components]]
        else:  # k-means++: each next center drawn with probability ~ squared distance to the nearest
            centers = x[torch.randint(len(x), (1,), generator=generator, device=x.device)]
            nearest = torch.cdist(x, centers).square().squeeze(1)
            for _ in range(1, self.components):
                weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)  # all codes equal
                pick = torch.multinomial(weights, 1, generator=generator)
                centers = torch.cat([centers, x[pick]])
                nearest = torch.minimum(nearest, (x - x[pick]).square().sum(1))
        assignment = torch.cdist(x, centers).argmin(1)
        return torch.nn.functional.one_hot(assignment, self.components).to(x.dtype)

    def m_step(self, x: Tensor, resp: Tensor) -> None:
        """Weights, means and covariance factors maximizing the expected log-likelihood under `resp`."""
        counts = resp.sum(0) + 10 * torch.finfo(x.dtype).eps  # an empty component keeps finite numbers
        self.weights = counts / counts.sum()
        self.means = resp.T @ x / counts[:, None]  # [K, D]
        ridge = self.ridge * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        covariances = []
        for k in range(self.components):  # one component at a time: [N, D] at most in memory
            centered = x - self.means[k]
            covariances.append((resp[:, k, None] * centered).T @ centered / counts[k] + ridge)
        self.factors = torch.linalg.cholesky(torch.stack(covariances))  # [K, D, D]

    def log_joint(self, x: Tensor) -> Tensor:
        """log w_k + log N(x_n | mu_k, Sigma_k), `[N, K]`."""
        constant = 0.5 * x.shape[1] * math.log(2 * math.pi)
        half_log_dets = self.factors.diagonal(dim1=1, dim2=2).log().sum(1)
        columns = []
        for k in range(self.components):
            whitened = torch.linalg.solve_triangular(self.factors[k], (x - self.means[k]).T, upper=False)
            columns.append(-0.5 * whitened.square().sum(0) - half_log_dets[k] - constant)
        return torch.stack(columns, 1) + self.weights.log()

    def e_step(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Log-responsibilities `[N, K]` and the mean log-likelihood of the codes."""
        joint = self.log_joint(x)
        log_px = joint.logsumexp(1, keepdim=True)
        return joint - log_px, log_px.mean()

    def sample_flat(self, n: int, generator: torch.Generator | None) -> Tensor:
        which = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(
            n, self.means.shape[1], generator=generator, device=self.means.device, dtype=self.means.dtype
        )
        draws = torch.empty_like(noise)
        for k in range(self.components):  # not factors[which]: n covariance factors in memory
            mine = which == k
            draws[mine] = self.means[k] + noise[mine] @ self.factors[k].T
        return draws.to(self.dtype)


def make_sampler(options: Mapping[str, Any], model: Any) -> Sampler:
    """The sampler a `sampler` config (`name` and its options) describes, for `model`."""
    options = dict(options)
    name = options.pop("name", "auto")
    if name not in SAMPLERS:
        raise UserError(f"sampler={name!r} is not one of {', '.join(SAMPLERS)}")
    if name == "auto":
        name = "prior" if model.has_prior else "gaussian"
    if name == "prior":
        return PriorSampler(model)
    if name == "gaussian":
        return GaussianSampler()
    return GMMSampler(**options)
