"""`aevae-export`: a trained AE/VAE's encoder and decoder as files that run without aevae.

aevae-export run_dir=outputs/runs/<date>/<time> format=onnx
aevae-export ckpt=path/to/epoch009.ckpt "format=[onnx,torchscript,torch_export]" out=exported

Writes into `out` (default: `<run dir>/export/`) per format an encoder (images -> code; a VAE's
posterior mean and log-variance) and a decoder (codes -> logits), and `export.json`: the shapes,
dtype, input range, how logits become pixels and the prior to sample codes from. Every file is
checked against the PyTorch model on the way out; the largest difference goes into the JSON.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aevae.commands.cli import answer_version, standalone_app
from aevae.config import UserError, one_line_errors, quote_paths, require

#: format -> the suffix of its files.
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "torch_export": ".pt2"}
#: Batch of the example input the networks are traced with; the batch dim stays dynamic.
EXAMPLE_BATCH = 2
JSON_FILE = "export.json"


def require_onnx() -> None:
    """A one-line UserError when the `onnx` extra is not installed (torch.onnx's exporter needs
    onnx and onnxscript; the check after export runs the files in onnxruntime)."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module, "onnx", by="format=onnx", name=f"ONNX ({module})")


def formats(value: Any) -> list[str]:
    """`format` as a list of known format names."""
    names = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names:
        raise UserError(
            f"format={value} is not allowed: expected one of {', '.join(FORMATS)} or a list of them"
        )
    if unknown := [n for n in names if n not in FORMATS]:
        raise UserError(f"format={unknown[0]} is not known: expected one of {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the files of every format in `cfg.format`; returns what export.json holds."""
    names = formats(cfg.format)
    if "onnx" in names:
        require_onnx()  # before the slow part
    if (cfg.ckpt is None) == (cfg.run_dir is None):
        raise UserError("give one of ckpt=CHECKPOINT or run_dir=RUN_DIR")
    import torch

    from aevae.models import VQVAE, VQPrior, load_checkpoint, resolve_checkpoint

    key, where = ("ckpt", cfg.ckpt) if cfg.ckpt is not None else ("run_dir", cfg.run_dir)
    checkpoint = resolve_checkpoint(where, key=key)
    model = load_checkpoint(checkpoint, key=key)
    if isinstance(model, VQVAE | VQPrior):  # their quantizer is a lookup, in none of the networks
        raise UserError(
            f"{key}={where} holds a {type(model).__name__}, whose codes are codebook lookups: "
            "aevae-export takes AE and VAE models"
        )
    if model.conditional:
        raise UserError(
            f"{key}={where} holds a conditional {type(model).__name__}, whose encoder and decoder also "
            "take a label: export takes unconditional models; use aevae.load() in Python for this one"
        )
    if model.likelihood.out_channels(model.image_shape[0]) != model.image_shape[0]:
        loss = type(model.likelihood).__name__
        raise UserError(
            f"{key}={where} decodes {loss} parameters, not logits: export takes bce/gaussian/mse models"
        )
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    out = Path(cfg.out) if cfg.out else run_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    parts = networks(model)
    report = describe(model, checkpoint, parts)
    previous = _read_json(out / JSON_FILE)
    if previous.get("checkpoint") == report["checkpoint"]:
        report["files"] = previous.get("files", {})  # the other formats exported from it before
    for name in names:
        report["files"][name] = {}
        for part, net in parts.items():
            path = out / f"{part}{FORMATS[name]}"
            with torch.no_grad():
                WRITERS[name](net.module, _example(model, part, EXAMPLE_BATCH), path, net, cfg.opset)
                check = _example(model, part, EXAMPLE_BATCH + 1)  # another batch size than traced
                difference = max_difference(net.reference(check), RUNNERS[name](path, check))
            report["files"][name][part] = {"file": path.name, "max_abs_diff": difference}
            print(f"wrote {path} (largest difference to PyTorch: {difference:.3g})")
    (out / JSON_FILE).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / JSON_FILE}")
    return report


def networks(model: Any) -> dict[str, Part]:
    """The encoder and the decoder as plain torch modules (the LightningModule itself does not
    trace: TorchScript probes its `trainer`), each with the model's method it must match."""
    import torch

    from aevae.models import VAE

    class Posterior(torch.nn.Module):
        """The VAE's posterior head: the mean and the log-variance."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean, log_var = self.net(x).chunk(2, dim=1)
            return mean, log_var

    if isinstance(model, VAE):
        encoder = Part(Posterior(model.encoder).eval(), model.posterior, ("images",), ("mean", "log_var"))
    else:
        module = torch.nn.Sequential(model.encoder, model.latent_activation).eval()
        encoder = Part(module, model.encode, ("images",), ("code",))
    return {"encoder": encoder, "decoder": Part(model.decoder, model.decode, ("codes",), ("logits",))}


@dataclass
class Part:
    """A network to export, the model's method it stands for, and its input and output names."""

    module: Any
    reference: Callable[[Any], Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def describe(model: Any, checkpoint: Path, parts: dict[str, Part]) -> dict[str, Any]:
    """What a user of the files needs to know: shapes, dtype, input range, pixels, prior."""
    from aevae.losses import ReconstructionLoss

    if type(model.likelihood).mean is not ReconstructionLoss.mean:
        raise NotImplementedError(f"{type(model.likelihood).__name__}'s pixel mean is not a sigmoid")
    c, h, w = model.image_shape
    data = model.run_config["data"]
    shapes = {"images": ["batch", c, h, w], "logits": ["batch", c, h, w]}  # the rest: codes
    return {
        "checkpoint": str(checkpoint.resolve()),
        "model": type(model).__name__,
        "data": data["name"],
        "input": {
            "name": "images",
            "shape": ["batch", c, h, w],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "normalization": "uint8 pixels / 255" + ("; binarized in training" if _binarized(data) else ""),
        },
        "latent_dim": model.latent_dim,
        **{
            name: {
                "inputs": {n: shapes.get(n, ["batch", model.latent_dim]) for n in part.inputs},
                "outputs": {n: shapes.get(n, ["batch", model.latent_dim]) for n in part.outputs},
            }
            for name, part in parts.items()
        },
        "pixels": "sigmoid(logits)",  # the decoder's: the mean of every aevae likelihood
        "likelihood": type(model.likelihood).__name__,
        **_prior(model),
        "files": {},
    }


def _prior(model: Any) -> dict[str, Any]:
    """Where a user of the files gets codes to decode into new images."""
    if model.standard_prior:
        return {
            "prior": {"distribution": "normal", "mean": 0.0, "std": 1.0},
            "sample": "sigmoid(decoder(z)) for z ~ N(0, I) of shape [n, latent_dim]",
        }
    if model.has_prior:  # learned (VampPrior, HVAE's p(z1|z2)): not in the exported networks
        return {
            "prior": {"distribution": f"learned by the {type(model).__name__}, not exported"},
            "sample": "sigmoid(decoder(z)) for z = aevae.load(RUN_DIR).prior_codes(n) in Python",
        }
    return {
        "prior": None,
        "sample": "an AE has no prior: decode codes near those of real images (encoder outputs)",
    }


def _binarized(data: dict[str, Any]) -> bool:
    return str(data.get("binarize", "none")) != "none"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _example(model: Any, part: str, batch: int) -> Any:
    """A seeded input of the encoder (images in [0, 1]) or of the decoder (standard-normal codes)."""
    import torch

    generator = torch.Generator().manual_seed(batch)
    if part == "encoder":
        return torch.rand(batch, *model.image_shape, generator=generator)
    return torch.randn(batch, model.latent_dim, generator=generator)


def _batch_dim() -> Any:
    import torch

    return ({0: torch.export.Dim("batch")},)  # of the one positional input


def write_onnx(module: Any, example: Any, path: Path, part: Part, opset: int | None) -> None:
    import torch

    for name in ("onnxscript", "onnx_ir"):  # a line per graph pass they run, at INFO level
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=list(part.inputs),
        output_names=list(part.outputs),
        dynamic_shapes=_batch_dim(),
        opset_version=opset,
        external_data=False,  # one self-contained file: these networks are small
        dynamo=True,
        verbose=False,
    )


def write_torchscript(module: Any, example: Any, path: Path, *_: Any) -> None:
    import torch

    with warnings.catch_warnings():  # torch deprecates TorchScript (README: prefer torch_export)
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        torch.jit.trace(module, (example,)).save(str(path))


def write_torch_export(module: Any, example: Any, path: Path, *_: Any) -> None:
    import torch

    torch.export.save(torch.export.export(module, (example,), dynamic_shapes=_batch_dim()), str(path))


def run_onnx(path: Path, x: Any) -> list[Any]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def run_torchscript(path: Path, x: Any) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        return torch.jit.load(str(path))(x)


def run_torch_export(path: Path, x: Any) -> Any:
    import torch

    return torch.export.load(str(path)).module()(x)


WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript, "torch_export": write_torch_export}
RUNNERS = {"onnx": run_onnx, "torchscript": run_torchscript, "torch_export": run_torch_export}


def max_difference(expected: Any, got: Any) -> float:
    """The largest absolute difference between two outputs (a tensor or a tuple of them)."""
    import torch

    expected = expected if isinstance(expected, tuple | list) else (expected,)
    got = got if isinstance(got, tuple | list) else (got,)
    if len(expected) != len(got):
        raise RuntimeError(f"the exported file gives {len(got)} outputs, the model {len(expected)}")
    return max(
        (torch.as_tensor(e) - torch.as_tensor(g)).abs().max().item()
        for e, g in zip(expected, got, strict=True)
    )


@standalone_app("export")
def _task(cfg: DictConfig) -> None:
    with one_line_errors("aevae-export"):
        export(cfg)


def main() -> None:
    """The `aevae-export` command."""
    answer_version("aevae-export")
    sys.argv = [sys.argv[0], *quote_paths(sys.argv[1:])]
    _task()


if __name__ == "__main__":
    main()
