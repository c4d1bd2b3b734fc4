"""Contractive autoencoder (Rifai, Vincent, Muller, Glorot & Bengio, 2011): the AE with a penalty on
the squared Frobenius norm of the encoder's Jacobian, which makes the code locally insensitive to
the input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from aevae.config import UserError
from aevae.models.ae import AE

Encoder = Callable[[Tensor], Tensor]


def exact_jacobian_norm(encode: Encoder, x: Tensor) -> tuple[Tensor, Tensor]:
    """The codes `[B, d]` of images `x [B, ...]` and ||dz/dx||_F^2 of each image's Jacobian `[B]`,
    exactly: d vector-Jacobian products per image (`torch.func.jacrev`, batched by `vmap`)."""

    def code(one: Tensor) -> tuple[Tensor, Tensor]:
        z = encode(one[None])[0]
        return z, z  # the Jacobian of z, and z itself as the aux output

    jacobian, z = torch.func.vmap(torch.func.jacrev(code, has_aux=True))(x)  # [B, d, ...], [B, d]
    return z, jacobian.square().flatten(1).sum(1)


def hutchinson_jacobian_norm(
    encode: Encoder, x: Tensor, projections: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """The codes `[B, d]` of `x` and an unbiased estimate `[B]` of ||J||_F^2 = E_v ||J^T v||^2 over
    `projections` Rademacher vectors v in code space (E[v v^T] = I): one vector-Jacobian product each."""
    z, vjp = torch.func.vjp(encode, x)
    shape = (projections, *z.shape)
    signs = torch.randint(0, 2, shape, generator=generator, device=z.device).to(z.dtype) * 2 - 1
    (rows,) = torch.func.vmap(vjp)(signs)  # J^T v: [P, B, ...]
    return z, rows.square().flatten(2).sum(2).mean(0)


@contextlib.contextmanager
def autograd_in_evaluation(batch: Sequence[Tensor]) -> Iterator[list[Tensor]]:
    """Autograd on, also under Lightning's inference mode (validation and test), with copies of
    `batch` that autograd may save (inference tensors cannot be)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield [t.clone() for t in batch]


class ContractiveAE(AE):
    """loss = recon + contraction * ||J_f(x)||_F^2, f the encoder (with `latent_activation`).

    The penalty is exact (`torch.func.jacrev`) for codes of up to `exact_up_to` dims, a Hutchinson
    estimate from `projections` random projections above; it is differentiated with the rest of
    the loss (a double backward), so training costs about one more backward per code dim or projection.
    """

    term_names = ("loss", "recon", "contraction")

    def __init__(
        self,
        *args: Any,
        contraction: float = 0.1,
        exact_up_to: int = 16,
        projections: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not contraction >= 0:
            raise UserError(f"model.contraction={contraction} must be a number >= 0")
        if projections < 1:
            raise UserError(f"model.projections={projections} must be an integer >= 1")
        self.contraction, self.exact_up_to, self.projections = float(contraction), exact_up_to, projections

    def jacobian_norm(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Codes `[B, d]` and ||J||_F^2 `[B]`: exact or estimated, as `exact_up_to` says."""
        if self.latent_dim <= self.exact_up_to:
            return exact_jacobian_norm(self.encode, x)
        return hutchinson_jacobian_norm(self.encode, x, self.projections, generator)

    def terms(
        self,
        x: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> dict[str, Tensor]:
        z, penalty = self.jacobian_norm(x, generator)
        recon = self.likelihood(self.decode(z), x if target is None else target)
        return {"loss": recon + self.contraction * penalty, "recon": recon, "contraction": penalty}

    def evaluate(
        self, batch: Sequence[Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        with autograd_in_evaluation(batch) as copies:
            values = super().evaluate(copies, generator)
        return {name: value.detach() for name, value in values.items()}
