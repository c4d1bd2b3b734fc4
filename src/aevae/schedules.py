"""Learning-rate schedules for `model.scheduler` (partials called with the optimizer, stepped per epoch)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def iwae_paper_stage(epoch: int) -> int:
    """Stage i of Burda et al. (2015) that epoch `epoch` (0-based) falls in: stage i lasts 3^i
    epochs, so stages end after 1, 4, 13, 40, 121, 364, 1093 and 3280 epochs."""
    stage, end = 0, 1
    while epoch >= end:
        stage += 1
        end += 3**stage
    return stage


def iwae_paper(optimizer: Optimizer) -> LambdaLR:
    """lr x 10^(-i/7) during stage i (the paper: 1e-3 x 10^(-i/7) for 3^i epochs, i = 0..7)."""
    return LambdaLR(optimizer, lambda epoch: 10 ** (-iwae_paper_stage(epoch) / 7))
