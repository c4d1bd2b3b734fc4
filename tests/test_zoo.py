"""The model zoo: every model × net × likelihood trains, evaluates, samples and round-trips a
checkpoint; the pairs that make no sense are refused in one line; experiment=zoo ranks them."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from aevae.commands.compare import expand, markdown_table, ranks, read_eval
from aevae.commands.train import build
from aevae.config import compose_config, user_error
from aevae.engine import chunked
from aevae.models import load_checkpoint, resolve_checkpoint
from conftest import EXE, QUIET, SMALL_DATA, mnist_root, run
from test_graphs import StandInGraphs

#: Every autoencoder of conf/model (the classifier and the VQ prior train on codes, not images).
MODELS = (
    "ae",
    "vae",
    "iwae",
    "cvae",
    "btcvae",
    "vqvae",
    "wae",
    "vamp",
    "hvae",
    "sparse_ae",
    "contractive_ae",
)
NETS = ("mlp", "conv")
LOSSES = ("bce", "gaussian", "mse")
#: What each model refuses, with the words its one line must hold.
REFUSED = {
    **{
        (m, net, "mse"): "loss=mse" for m in ("vae", "iwae", "cvae", "btcvae", "vamp", "hvae") for net in NETS
    },
    ("vqvae", "mlp", "bce"): "model/net=conv",
    ("vqvae", "mlp", "gaussian"): "model/net=conv",
    ("vqvae", "mlp", "mse"): "model/net=conv",
}
SETTINGS = {"iwae": ["model.k=3"], "hvae": ["model.k=2"], "vamp": ["model.pseudo_inputs=8"]}
TINY = (
    f"data.root={mnist_root()}",
    *SMALL_DATA,
    *QUIET,
    "logger=none",
    "trainer.max_steps=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "model.hidden_dims=[32]",
)


def overrides(model: str, net: str, loss: str) -> list[str]:
    return [f"model={model}", f"model/net={net}", f"loss={loss}", *TINY, *SETTINGS.get(model, [])]


def batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=generator).round(), torch.arange(n) % 10


@pytest.mark.parametrize("model,net,loss", list(itertools.product(MODELS, NETS, LOSSES)))
def test_every_model_net_and_likelihood(tmp_path: Path, model: str, net: str, loss: str) -> None:
    """One optimizer step, the val/test measures, codes, prior draws and a state round trip, or
    one line refusing the pair (the Lightning path of each model: the test below)."""
    cfg = compose_config(overrides(model, net, loss), output_dir=tmp_path)
    if (refusal := REFUSED.get((model, net, loss))) is not None:
        with pytest.raises(Exception) as caught:
            instantiate(cfg.model)
        assert refusal in (user_error(caught.value) or ""), caught.value
        return
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    x, y = batch()
    terms = module.batch_terms((x, y))
    assert set(terms) == set(module.term_names) and all(t.shape == (len(x),) for t in terms.values())
    terms["loss"].mean().backward()
    optimizer.step()
    module.after_step()
    module.eval()
    labels = y if module.conditional else None
    with torch.no_grad():
        values = module.evaluate((x, y), torch.Generator().manual_seed(1))
        for name, value in values.items():
            assert torch.isfinite(value).all(), name
        codes = module.encode(x, labels)
        images = module.likelihood.mean(module.decode(codes, labels))
        assert images.shape == x.shape and torch.isfinite(images).all()
        if module.has_prior:
            drawn = module.prior_codes(4, torch.Generator().manual_seed(0), module.sample_labels(4))
            assert module.decode(drawn, module.sample_labels(4)).shape[0] == 4
        again = instantiate(cfg.model)
        again.load_state_dict(module.state_dict())
        torch.testing.assert_close(again.eval()(x, labels), module(x, labels))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_fits_resumes_exactly_tests_and_loads(
    tmp_path: Path, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Lightning: 2 epochs of 2 steps straight, its last step replayed from a captured
    step graph (the CUDA-graph plumbing against its CPU stand-in, tests/test_graphs.py), and
    1 epoch then a resume from that run's last.ckpt to 2, eager, end with the same weights and
    buffers (VQ's EMA codebook, Vamp's pseudo-inputs ...); then the test measures and a
    checkpoint that loads."""
    net = "conv" if model == "vqvae" else "mlp"
    monkeypatch.setattr(chunked, "GRAPHS", StandInGraphs)
    StandInGraphs.captures = StandInGraphs.replays = 0

    def fit(run_dir: Path, epochs: int, *more: str):
        epochs_of_2 = [
            "trainer.max_steps=-1",
            "trainer.limit_train_batches=2",
            f"trainer.max_epochs={epochs}",
        ]
        run_ = build(compose_config([*overrides(model, net, "bce"), *epochs_of_2, *more], run_dir))
        run_.trainer.fit(run_.model, datamodule=run_.datamodule, ckpt_path=run_.ckpt_path, weights_only=True)
        assert run_.trainer.global_step == 2 * epochs
        return run_

    straight = fit(tmp_path / "straight", 2, "cuda_graph=true")
    assert (StandInGraphs.captures, StandInGraphs.replays) == (1, 1)  # after 3 eager warm-up steps
    fit(tmp_path / "resumed", 1, "cuda_graph=false")
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    resumed = fit(tmp_path / "resumed", 2, "cuda_graph=false", f"ckpt_path={last}")
    expected = straight.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=f"{model}: {name} differs")
    (metrics,) = resumed.trainer.test(resumed.model, datamodule=resumed.datamodule, verbose=False)
    assert {f"test/{t}" for t in resumed.model.term_names} <= set(metrics), metrics
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    x, y = batch()
    labels = y if resumed.model.conditional else None
    loaded = load_checkpoint(resolve_checkpoint(tmp_path / "resumed", "run_dir"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, labels), resumed.model.eval()(x, labels))


def test_the_zoo_holds_every_model() -> None:
    """MODELS (the tests above), conf/zoo/ and experiment=zoo's sweep name the same models."""
    from omegaconf import OmegaConf

    from aevae.config import CONFIG_DIR

    swept = OmegaConf.load(CONFIG_DIR / "experiment" / "zoo.yaml").hydra.sweeper.params.zoo.split(",")
    assert swept == list(MODELS)
    assert {p.stem for p in (CONFIG_DIR / "zoo").glob("*.yaml")} == set(MODELS)
    models = {p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")} - {"classifier", "vq_prior"}
    assert models == set(MODELS)


# -- the ranking ---------------------------------------------------------------------------------
def test_ranks_follow_the_better_direction() -> None:
    assert ranks([3.0, None, 1.0, 2.0], "NLL ↓") == [3, None, 1, 2]
    assert ranks([0.5, 0.9, None], "accuracy ↑") == [2, 1, None]
    assert ranks([1.0, 2.0], "importance samples per image") == [None, None]


@pytest.fixture(scope="module")
def zoo_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo's real entry point on a tiny budget, with TensorBoard and every default callback
    (the zoo's own leave out the projector and the histograms)."""
    where = tmp_path_factory.mktemp("zoo")
    proc = run(
        EXE,
        "experiment=zoo",
        "callbacks=default",
        f"hydra.sweep.dir={where / 'zoo'}",
        f"data.root={mnist_root()}",
        *SMALL_DATA,
        *QUIET,
        "trainer.max_steps=4",
        "trainer.limit_val_batches=1",
        "callbacks.projector.num_points=50",
        "eval.iw_samples=4",
        "eval.iw_images=50",
        "eval.num_samples=100",
        "eval.interpolation_pairs=4",
        "eval.judge_epochs=1",
        cwd=where,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return where / "zoo"


def test_zoo_sweep_trains_evaluates_and_ranks_every_model(zoo_sweep: Path) -> None:
    """Every job trains, evaluates itself, and the sweep's end writes one ranking table that
    holds every model."""
    jobs = expand([zoo_sweep])
    models = {json.loads((job / "eval.json").read_text())["model"] for job in jobs}
    assert models == {
        "AE",
        "VAE",
        "IWAE",
        "CVAE",
        "BetaTCVAE",
        "VQVAE",
        "WAE",
        "VampVAE",
        "HVAE",
        "SparseAE",
        "ContractiveAE",
    }
    table = (zoo_sweep / "compare.md").read_text()
    assert table == markdown_table([read_eval(job) for job in jobs], rank=True)
    nll = next(line for line in table.splitlines() if "importance-weighted NLL, nats" in line)
    assert nll.count("(1)") == 1 and (zoo_sweep / "compare.png").is_file()


def test_every_model_logs_every_tensorboard_callback(zoo_sweep: Path) -> None:
    from tensorboard.backend.event_processing import event_accumulator as ea

    for job in expand([zoo_sweep]):
        events = ea.EventAccumulator(str(job / "tensorboard"), size_guidance={ea.IMAGES: 0}).Reload()
        images, histograms = set(events.Tags()["images"]), set(events.Tags()["histograms"])
        media = {"media/reconstructions", "media/prior_samples", "media/interpolations"}
        assert media <= images and "latent/activations" in histograms, (job.name, images, histograms)
        assert (job / "tensorboard" / "projector_config.pbtxt").is_file(), job.name
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams"), job.name


def test_every_model_samples_and_exports_or_says_why_not(zoo_sweep: Path, tmp_path: Path) -> None:
    """aevae-sample's pictures from every job; aevae-export's files, or its one line for the
    models it does not take (VQ-VAE: codebook lookups, CVAE: labels)."""
    from omegaconf import OmegaConf

    from aevae.commands.cli import command_keys
    from aevae.commands.export import export
    from aevae.commands.sample import sample
    from aevae.config import CONFIG_DIR

    refused = {"VQVAE": "codebook lookups", "CVAE": "take a label"}
    for job in expand([zoo_sweep]):
        model = json.loads((job / "eval.json").read_text())["model"]
        auto = OmegaConf.load(CONFIG_DIR / "sampler" / "auto.yaml")
        written = sample(command_keys("sample", run_dir=str(job), out=str(tmp_path / job.name), sampler=auto))
        assert {"prior_samples", "reconstructions", "interpolations"} <= set(written), model
        assert all(path.stat().st_size > 0 for path in written.values()), model
        options = {"run_dir": str(job), "out": str(tmp_path / job.name / "export"), "format": "torchscript"}
        try:
            report = export(command_keys("export", **options))
        except Exception as err:  # noqa: BLE001
            assert model in refused and refused[model] in (user_error(err) or ""), (model, err)
            continue
        assert model not in refused and report["files"]["torchscript"], model
        assert all(part["max_abs_diff"] <= 1e-5 for part in report["files"]["torchscript"].values()), model
        standard = model not in ("AE", "SparseAE", "ContractiveAE", "VampVAE", "HVAE")
        assert (report["prior"] == {"distribution": "normal", "mean": 0.0, "std": 1.0}) == standard, model
