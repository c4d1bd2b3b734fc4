"""How much of the label a frozen code carries: a linear probe and k nearest neighbours."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """Both sets scaled by the train set's mean and standard deviation (dead dims left at 0)."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def fit_linear_probe(
    codes: Tensor, labels: Tensor, classes: int, inverse_regularization: float = 1.0, iterations: int = 200
) -> tuple[Tensor, Tensor]:
    """Weight and bias of multinomial logistic regression on `codes`, fitted to convergence.

    The objective is scikit-learn's `LogisticRegression(C=inverse_regularization)`,
    ||W||^2 / 2 + C * (cross-entropy summed over the codes), divided by C * n to keep its
    scale fixed; full-batch L-BFGS solves this convex problem in a fraction of a second.
    """
    weight_decay = 1 / (2 * inverse_regularization * len(codes))
    weight = torch.zeros(codes.shape[1], classes, device=codes.device, requires_grad=True)
    bias = torch.zeros(classes, device=codes.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=iterations, history_size=20, line_search_fn="strong_wolfe"
    )

    def objective() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(codes @ weight + bias, labels) + weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return weight.detach(), bias.detach()


def linear_probe_accuracy(
    train_codes: Tensor,
    train_labels: Tensor,
    test_codes: Tensor,
    test_labels: Tensor,
    inverse_regularization: float = 1.0,
) -> float:
    """Test accuracy of a linear probe fitted to the frozen, standardized train codes: the number
    says what the code holds, not how long the probe was trained."""
    train_codes, test_codes = standardize(train_codes.float(), test_codes.float())
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    weight, bias = fit_linear_probe(train_codes, train_labels, classes, inverse_regularization)
    predicted = (test_codes @ weight + bias).argmax(1)
    return (predicted == test_labels).float().mean().item()


def knn_accuracy(
    train_codes: Tensor,
    train_labels: Tensor,
    test_codes: Tensor,
    test_labels: Tensor,
    k: int = 5,
    chunk: int = 1000,
) -> float:
    """Test accuracy of a majority vote of the `k` nearest train codes (Euclidean), `chunk` test
    codes at a time so the distance matrix stays small."""
    correct = 0
    for codes, labels in zip(test_codes.split(chunk), test_labels.split(chunk), strict=True):
        nearest = torch.cdist(codes, train_codes).topk(k, largest=False).indices
        correct += (train_labels[nearest].mode(1).values == labels).sum().item()
    return correct / len(test_codes)
