"""aevae: train, compare and inspect autoencoders and variational autoencoders.

    import aevae
    metrics, run_dir = aevae.train(["model=vae", "trainer.max_epochs=1"])
    model = aevae.load(run_dir)

The names below are imported on first use: every console script imports this package, and
the models bring in Lightning (seconds), which `aevae-train --help` has no use for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "AE": "aevae.models",
    "VAE": "aevae.models",
    "IWAE": "aevae.models",
    "Classifier": "aevae.models",
    "Autoencoder": "aevae.models",
    "Model": "aevae.models",
    "UserError": "aevae.config",
    **dict.fromkeys(
        ("Trained", "train", "load", "images", "encode", "decode", "reconstruct", "sample", "interpolate"),
        "aevae.api",
    ),
}

__all__ = [
    "__version__",
    "AE",
    "VAE",
    "IWAE",
    "Classifier",
    "Autoencoder",
    "Model",
    "UserError",
    "Trained",
    "train",
    "load",
    "images",
    "encode",
    "decode",
    "reconstruct",
    "sample",
    "interpolate",
]
assert set(__all__) == {"__version__", *_EXPORTS}

if TYPE_CHECKING:
    from aevae.api import (
        Trained,
        decode,
        encode,
        images,
        interpolate,
        load,
        reconstruct,
        sample,
        train,
    )
    from aevae.config import UserError
    from aevae.models import AE, IWAE, VAE, Autoencoder, Classifier, Model


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'aevae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
