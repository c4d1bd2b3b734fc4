"""How likely a VAE finds the test images: the negative ELBO and the importance-weighted bound.

The importance-weighted estimate (Burda et al., 2015) of -log p(x) with k
posterior draws z_s ~ q(z|x) is -log (1/k) sum_s p(x, z_s) / q(z_s|x). It is
a tighter bound than the negative ELBO (-mean_s log w_s) and tightens as k
grows. The draws are decoded in passes of bounded size, so k can be in the
thousands on any device; only the k log-weights per image are kept.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aevae.losses import log_mean_exp
from aevae.models import VAE


def likelihood_bounds(
    model: VAE,
    x: Tensor,
    samples: int,
    decodes_per_pass: int = 16_384,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per image `[B]`: `iw_nll` (-log mean_s w_s) and `neg_elbo` (-mean_s log w_s) from the same
    `samples` draws, decoded at most `decodes_per_pass` at a time (that bounds the memory).
    A conditional model bounds -log p(x | y) given the images' `labels`."""
    per_pass = max(1, decodes_per_pass // len(x))
    given = {"y": labels} if model.conditional else {}  # unconditional models take no labels
    log_w = torch.cat(
        [
            model.log_weights(x, min(per_pass, samples - start), generator, **given)
            for start in range(0, samples, per_pass)
        ]
    )
    return {"iw_nll": -log_mean_exp(log_w), "neg_elbo": -log_w.mean(0)}
