"""aevae-export: the exported files run without aevae and give the PyTorch model's outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import aevae
from conftest import command, readme_code, run_env

ALL_FORMATS = "format=[onnx,torchscript,torch_export]"

#: Runs each exported file on the saved inputs in a process where aevae cannot be imported,
#: with the tools a user without aevae has, then the README's ONNX example.
RUNNER = r"""
import sys
sys.modules["aevae"] = None  # any `import aevae` now fails
import json, pathlib
import numpy as np, onnxruntime, torch

folder = pathlib.Path(sys.argv[1])
info = json.loads((folder / "export.json").read_text())
inputs = torch.load(folder / "inputs.pt")
results = {}
for fmt, parts in info["files"].items():
    for part, entry in parts.items():
        path, x = str(folder / entry["file"]), inputs[part]
        if fmt == "onnx":
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            (name,) = info[part]["inputs"]  # the input name export.json gives
            out = [torch.from_numpy(o) for o in session.run(None, {name: x.numpy()})]
        elif fmt == "torchscript":
            out = torch.jit.load(path)(x)
        else:
            out = torch.export.load(path).module()(x)
        results[f"{fmt}/{part}"] = list(out) if isinstance(out, (tuple, list)) else [out]
torch.save(results, folder / "outputs.pt")
if len(sys.argv) > 2:
    exec(pathlib.Path(sys.argv[2]).read_text())
    assert pixels.shape == (16, 1, 28, 28) and 0 <= pixels.min() and pixels.max() <= 1
    print("README example OK")
print("aevae imported:", any(m == "aevae" or m.startswith("aevae.") for m in sys.modules if sys.modules[m]))
"""


def export(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The installed `aevae-export`, with `env` on top of the tests' environment."""
    cmd = [*command("export"), *args]
    return subprocess.run(cmd, env={**run_env(), **env}, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("model_name", ["ae", "vae"])
def test_exported_files_match_the_model_without_aevae(
    trained: dict[str, Path], model_name: str, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    proc = export(f"run_dir={trained[model_name]}", ALL_FORMATS, f"out={out}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "export.json").read_text())
    model = aevae.load(trained[model_name])
    d = model.latent_dim
    assert info["latent_dim"] == d and info["input"]["shape"] == ["batch", 1, 28, 28]
    assert info["input"]["range"] == [0.0, 1.0] and info["pixels"] == "sigmoid(logits)"
    codes = ["mean", "log_var"] if model_name == "vae" else ["code"]
    assert list(info["encoder"]["outputs"]) == codes and info["decoder"]["inputs"] == {"codes": ["batch", d]}
    assert info["prior"] == (
        {"distribution": "normal", "mean": 0.0, "std": 1.0} if model_name == "vae" else None
    )
    for entry in (e for parts in info["files"].values() for e in parts.values()):
        assert (out / entry["file"]).is_file() and entry["max_abs_diff"] <= 1e-5, entry

    generator = torch.Generator().manual_seed(1)
    images = aevae.images(model, "test")[0][:5]  # a batch size the export did not trace
    z = torch.randn(5, d, generator=generator)
    torch.save({"encoder": images, "decoder": z}, out / "inputs.pt")
    with torch.no_grad():
        expected = {
            "encoder": list(model.posterior(images)) if model_name == "vae" else [model.encode(images)],
            "decoder": [model.decode(z)],
        }
    readme = tmp_path / "readme_onnx.py"
    (onnx_example,) = readme_code("Export")
    readme.write_text(onnx_example.replace("outputs/runs/<date>/<time>/export", str(out)))
    extra = [str(readme)] if model_name == "vae" else []  # the example samples a VAE of latent_dim 32
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(out), *extra], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "aevae imported: False" in proc.stdout
    assert ("README example OK" in proc.stdout) == (model_name == "vae")

    got = torch.load(out / "outputs.pt")
    assert sorted(got) == sorted(
        f"{f}/{p}" for f in ("onnx", "torchscript", "torch_export") for p in expected
    )
    differences = {}
    for key, outputs in got.items():
        reference = expected[key.split("/")[1]]
        assert [o.shape for o in outputs] == [r.shape for r in reference], key
        differences[key] = max((o - r).abs().max().item() for o, r in zip(outputs, reference, strict=True))
    print(f"{model_name}: largest |exported - PyTorch| per file:", differences)
    assert max(differences.values()) <= 1e-5, differences
    # export.json's pixel map turns the decoder's logits into the images aevae.decode gives
    assert torch.allclose(torch.sigmoid(got["onnx/decoder"][0]), aevae.decode(model, z), atol=1e-5)


def test_export_mistakes_are_one_line(trained: dict[str, Path], tmp_path: Path) -> None:
    def error_of(*args: str, **env: str) -> str:
        proc = export(*args, **env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
        return lines[0]

    run_dir = f"run_dir={trained['ae']}"
    assert error_of(run_dir, "format=png") == (
        "aevae-export: error: format=png is not known: expected one of onnx, torchscript, torch_export"
    )
    assert error_of(f"run_dir={tmp_path / 'nothing'}", "format=torchscript") == (
        f"aevae-export: error: run_dir={tmp_path / 'nothing'} does not exist; give the folder of an "
        "aevae-train run"
    )
    stub = tmp_path / "no_onnx" / "onnx"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('not installed', name='onnx')\n")
    assert error_of(run_dir, PYTHONPATH=str(stub.parent)) == (  # where `import onnx` fails
        "aevae-export: error: format=onnx needs ONNX (onnx is missing): pip install 'aevae[onnx]'"
    )
