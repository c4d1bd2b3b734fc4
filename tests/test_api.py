"""The Python API: `import aevae`, aevae.train/load and the helpers, Model.load_from_checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import aevae
from aevae.config import UserError, compose_config
from conftest import readme_code, run_env

#: Run after the README's block, in the same process: its results are what the comments say,
#: and a second aevae.train works (Hydra's global state was cleared) and gets its own run dir.
README_CHECKS = """
import json
assert json.loads((run_dir / "metrics.json").read_text()) == metrics
assert type(model) is aevae.VAE and not model.training and model.image_shape == (1, 28, 28)
assert images.shape == (10000, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
assert codes.shape == (16, 8) and recon.shape == (16, 1, 28, 28) and new.shape == (64, 1, 28, 28)
assert path.shape == (10, 1, 28, 28) and 0 <= new.min() and new.max() <= 1
assert torch.allclose(recon, aevae.decode(model, codes), atol=1e-6)
assert metrics["test/neg_elbo"] < 300, metrics  # untrained: 543 nats (784 ln 2); it learned
again, second_dir = aevae.train(["model=ae", "trainer.max_steps=5", "test=false", "data.train_size=640"])
assert second_dir != run_dir and (second_dir / "config.yaml").is_file(), second_dir
print("README OK", run_dir, second_dir)
"""


def test_readme_from_python_runs_as_written(tmp_path: Path) -> None:
    (block,) = readme_code("From Python")
    script = block + "\nimport torch\n" + README_CHECKS
    command = [sys.executable, "-c", script]
    proc = subprocess.run(command, cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "README OK" in proc.stdout
    assert str(tmp_path / "outputs" / "runs") in proc.stdout  # the CLI's default run dir, below the cwd


def test_import_is_lazy_and_api_names_survive_command_imports() -> None:
    script = textwrap.dedent("""
        import sys, aevae
        assert "torch" not in sys.modules and "lightning" not in sys.modules, "import aevae is not light"
        import aevae.commands.train, aevae.commands.sample  # the commands' modules
        from aevae.commands.train import build
        assert callable(aevae.train) and aevae.train.__module__ == "aevae.api", aevae.train
        assert aevae.sample.__module__ == "aevae.api", aevae.sample
        assert set(aevae.__all__) <= set(dir(aevae))
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def _saved(model_name: str, tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A checkpoint with what aevae-train stores for a model (weights and the run config)."""
    cfg = compose_config([f"model={model_name}"], output_dir=tmp_path)
    model = instantiate(cfg.model, _convert_="all")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()  # not the initial weights: the loaded ones must be these
    path = tmp_path / f"{model_name}.ckpt"
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.save({"state_dict": model.state_dict(), "aevae_config": config}, path)
    return path, model


@pytest.mark.parametrize(
    ("model_name", "cls"),
    [("ae", aevae.AE), ("vae", aevae.VAE), ("iwae", aevae.IWAE), ("classifier", aevae.Classifier)],
)
def test_load_from_checkpoint_rebuilds_every_model(model_name: str, cls: type, tmp_path: Path) -> None:
    path, saved = _saved(model_name, tmp_path)
    for loader in (cls, aevae.Model):
        loaded = loader.load_from_checkpoint(path)
        assert type(loaded) is cls and not loaded.training
        assert loaded.run_config["model"]["_target_"].endswith(cls.__name__)
        for name, value in saved.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], value), name
    assert type(aevae.load(path)) is cls


def test_load_from_checkpoint_overrides_and_refuses_other_models(tmp_path: Path) -> None:
    path, _ = _saved("vae", tmp_path)
    assert aevae.VAE.load_from_checkpoint(path, weights_only=True, beta=4.0).beta == 4.0
    with pytest.raises(UserError, match="hparams_file is not used"):
        aevae.VAE.load_from_checkpoint(path, hparams_file="hparams.yaml")
    with pytest.raises(UserError, match=r"holds a model of class VAE, not of class Classifier"):
        aevae.Classifier.load_from_checkpoint(path)


def test_load_of_a_trained_run(trained: dict[str, Path]) -> None:
    """aevae.load picks the run's best checkpoint, as aevae-eval does; Lightning's own call on
    that file gives the same model."""
    run_dir = trained["vae"]
    model = aevae.load(run_dir)
    (best,) = (run_dir / "checkpoints").glob("epoch*.ckpt")
    same = aevae.VAE.load_from_checkpoint(best)
    x = aevae.images(model, "val")[0][:8]
    assert torch.equal(aevae.encode(model, x), aevae.encode(same, x))
    assert model.run_config == json.loads(json.dumps(model.run_config))  # plain containers
    codes = aevae.encode(aevae.load(trained["ae"]), x)
    assert codes.shape == (8, 32)


def test_api_mistakes_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^path=.*nothing does not exist"):
        aevae.load(tmp_path / "nothing")
    with pytest.raises(UserError, match="a folder without checkpoints"):
        aevae.load(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"model.lr=-1 is not allowed"):
        aevae.train(["model.lr=-1"], output_dir=out)
    assert "model.lr=-1 is not allowed" in (out / "error.txt").read_text()  # as aevae-train leaves it
    with pytest.raises(UserError, match="nope"):  # an option the group does not have: Hydra's error
        aevae.train(["model=nope"], output_dir=out)
