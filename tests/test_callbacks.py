"""TensorBoard callbacks: a real short VAE run read back from its event files and served by TensorBoard."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from aevae.callbacks import Interpolations, PriorSamples, Reconstructions
from aevae.callbacks.tensorboard import pick_images
from aevae.commands.train import build
from aevae.config import UserError, compose_config
from aevae.data import MNISTDataModule
from aevae.models import load_checkpoint
from aevae.sampling.latents import encode_all, fit_gaussian, gaussian_draws, lerp, slerp
from aevae.sampling.pictures import fixed_indices
from conftest import REPO, aevae_train, mnist_root, png_size, read_metrics

EPOCHS, STEPS_PER_EPOCH, PROJECTED = 3, 40, 1000
#: Width and height of each media grid: 28 px images with 2 px padding, (columns, rows).
GRID_SIZES = {
    "media/reconstructions": (8, 4),  # 16 images, 8 a row, each row followed by its reconstructions
    "media/prior_samples": (8, 8),  # 64 samples
    "media/interpolations": (12, 8),  # 8 pairs: image, 10 decodings, image
}
HPARAMS = {"model", "latent_dim", "loss", "beta", "lr", "batch_size", "data", "seed"}
PLUGINS = ("scalars", "images", "histograms", "hparams", "projector")
TENSORBOARD_CALLBACKS = ("reconstructions", "prior_samples", "interpolations", "projector", "histograms")


def grid_size(columns: int, rows: int) -> tuple[int, int]:
    return columns * 30 + 2, rows * 30 + 2


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short real `aevae-train model=vae` run with every default callback on."""
    run_dir = tmp_path_factory.mktemp("tensorboard") / "vae"
    aevae_train(
        "model=vae",
        f"trainer.max_epochs={EPOCHS}",
        f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
        "data.val_size=1000",
        "callbacks.progress_bar.refresh_rate=0",
        f"callbacks.projector.num_points={PROJECTED}",
        f"hydra.run.dir={run_dir}",
    )
    return run_dir


@pytest.fixture(scope="module")
def events(vae_run: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    keep_all = {ea.IMAGES: 0, ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0}
    return ea.EventAccumulator(str(vae_run / "tensorboard"), size_guidance=keep_all).Reload()


# -- the event files -------------------------------------------------------------------
@pytest.mark.parametrize("tag", GRID_SIZES)
def test_one_image_per_epoch(events, tag: str) -> None:
    images = events.Images(tag)
    assert [i.step for i in images] == [STEPS_PER_EPOCH * (e + 1) for e in range(EPOCHS)]
    assert {(i.width, i.height) for i in images} == {grid_size(*GRID_SIZES[tag])}
    assert all(png_size(i.encoded_image_string) == grid_size(*GRID_SIZES[tag]) for i in images)
    assert len({i.encoded_image_string for i in images}) == EPOCHS  # the model changed, the grid did


def test_scalars_decrease_over_epochs(events, vae_run: Path) -> None:
    for tag in ("val/loss", "val/neg_elbo", "train/loss_epoch"):
        values = [s.value for s in events.Scalars(tag)]
        decreasing = all(b < a for a, b in zip(values[:-1], values[1:], strict=True))
        assert len(values) == EPOCHS and decreasing, (tag, values)
    assert [s.value for s in events.Scalars("lr-Adam")] == pytest.approx([1e-3] * EPOCHS)
    final = read_metrics(vae_run)
    for tag in ("test/neg_elbo", "test/kl", "test/mse"):
        assert events.Scalars(tag)[-1].value == pytest.approx(final[tag], rel=1e-6)


def test_latent_histograms(events, vae_run: Path) -> None:
    assert {"latent/activations", "latent/std_per_dim", "latent/kl_per_dim"} <= set(
        events.Tags()["histograms"]
    )
    activations = events.Histograms("latent/activations")
    assert len(activations) == EPOCHS and activations[-1].histogram_value.num == 1000 * 32  # all val images
    for tag in ("latent/std_per_dim", "latent/kl_per_dim"):
        bars = events.Histograms(tag)
        assert [h.step for h in bars] == [h.step for h in activations]
        last = bars[-1].histogram_value
        assert list(last.bucket_limit) == [d + 0.5 for d in range(32)] and min(last.bucket) >= 0, tag
    # the KL bars split the KL over dims: over all 1000 val images they add up to val/kl
    kl_bars = events.Histograms("latent/kl_per_dim")[-1].histogram_value.bucket
    assert sum(kl_bars) == pytest.approx(events.Scalars("val/kl")[-1].value, rel=1e-4)
    # and the std bars are the spread of the final model's posterior means over those images
    datamodule = MNISTDataModule(root=str(mnist_root()), download=False, val_size=1000)
    datamodule.setup()
    model = load_checkpoint(vae_run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        means = model.posterior(datamodule.splits["val"][0].float() / 255)[0]
    std_bars = torch.tensor(events.Histograms("latent/std_per_dim")[-1].histogram_value.bucket).float()
    torch.testing.assert_close(std_bars, means.std(0), rtol=1e-4, atol=1e-5)


def test_hparams_session_holds_the_run_and_its_final_metrics(events, vae_run: Path) -> None:
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {k: v.string_value or v.number_value for k, v in start.session_start_info.hparams.items()}
    assert hparams == {
        "model": "vae",
        "latent_dim": 32,
        "loss": "bernoulli",
        "beta": 1.0,
        "lr": 1e-3,
        "batch_size": 64,
        "data": "mnist",
        "seed": 42,
    }
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    assert end.session_end_info.status == api_pb2.STATUS_SUCCESS
    # the session's metrics are the scalars of its run: the final test metrics are among them
    scalars = set(events.Tags()["scalars"])
    assert set(read_metrics(vae_run)) <= scalars and "test/neg_elbo" in scalars


def test_projector_holds_test_latent_means_labels_and_sprites(vae_run: Path) -> None:
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    log_dir = vae_run / "tensorboard"
    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_name == f"latent_means:{EPOCHS * STEPS_PER_EPOCH:05d}"
    rows = [
        [float(v) for v in line.split("\t")]
        for line in (log_dir / embedding.tensor_path).read_text().splitlines()
    ]
    metadata = [line.split("\t") for line in (log_dir / embedding.metadata_path).read_text().splitlines()]
    assert len(rows) == PROJECTED and {len(r) for r in rows} == {32}
    assert metadata[0] == ["label", "class"] and len(metadata) == PROJECTED + 1
    assert list(embedding.sprite.single_image_dim) == [28, 28]
    side = math.ceil(math.sqrt(PROJECTED)) * 28
    assert png_size((log_dir / embedding.sprite.image_path).read_bytes()) == (side, side)

    # the points are the final model's posterior means of fixed test images, with their labels
    datamodule = MNISTDataModule(root=str(mnist_root()), download=False)
    datamodule.setup()
    images, labels = datamodule.splits["test"]
    index = fixed_indices(len(images), PROJECTED, seed=0)
    assert [int(m[0]) for m in metadata[1:]] == labels[index].tolist()
    assert len({m[1] for m in metadata[1:]}) == 10 and metadata[1][1].startswith(metadata[1][0])
    model = load_checkpoint(vae_run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        means = model.posterior(images[index].float() / 255)[0]
    torch.testing.assert_close(torch.tensor(rows), means, rtol=1e-4, atol=1e-4)


# -- a real TensorBoard serving it -------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoardServer:
    """`tensorboard --logdir` in a subprocess, and its HTTP data API."""

    def __init__(self, exe: str, logdir: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        cmd = [exe, "--logdir", str(logdir), "--port", port, "--host", "127.0.0.1", "--load_fast=false"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def get(self, path: str, body: dict | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"} if body is not None else {}
        with urllib.request.urlopen(urllib.request.Request(self.url + path, data, headers), timeout=30) as r:
            return r.read()

    def json(self, path: str, body: dict | None = None):  # noqa: ANN201
        return json.loads(self.get(path, body))

    def loaded(self, runs: list[str]) -> bool:
        """Whether every run's images are in and every plugin the callbacks feed is active."""
        images = self.json("/data/plugin/images/tags")
        plugins = self.json("/data/plugins_listing")
        return all(len(images.get(run, {})) == len(GRID_SIZES) for run in runs) and all(
            plugins[p]["enabled"] for p in PLUGINS
        )

    def wait_for(self, ready, timeout: float = 90) -> None:  # noqa: ANN001
        """Until `ready()` holds: the server answers and has loaded the runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tensorboard exited with {self.proc.returncode}:\n{self.proc.stdout.read()}")
            try:
                if ready():
                    return
            except (urllib.error.URLError, ConnectionError, KeyError):
                pass
            time.sleep(0.5)
        pytest.fail(f"tensorboard at {self.url} not ready after {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def tensorboard(vae_run: Path, trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """A real TensorBoard over a two-run "sweep": this VAE run and the session's short AE run."""
    exe = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or shutil.which("tensorboard")
    if exe is None:
        pytest.skip("the tensorboard server binary is not installed")
    logdir = tmp_path_factory.mktemp("logdir")
    for name, run in (("vae", vae_run), ("ae", trained["ae"])):
        shutil.copytree(run / "tensorboard", logdir / name)
    server = TensorBoardServer(exe, logdir)
    try:
        server.wait_for(lambda: server.loaded(["ae", "vae"]))
        yield server
    finally:
        server.stop()


def test_tensorboard_serves_runs_scalars_and_images(tensorboard: TensorBoardServer) -> None:
    assert sorted(tensorboard.json("/data/runs")) == ["ae", "vae"]
    assert set(tensorboard.json("/data/plugin/images/tags")["vae"]) == set(GRID_SIZES)
    val_loss = tensorboard.json("/data/plugin/scalars/scalars?run=vae&tag=val/loss")
    assert len(val_loss) == EPOCHS
    for tag, size in GRID_SIZES.items():
        listing = tensorboard.json(f"/data/plugin/images/images?run=vae&tag={tag}")
        assert [i["step"] for i in listing] == [STEPS_PER_EPOCH * (e + 1) for e in range(EPOCHS)]
        image = tensorboard.get(f"/data/plugin/images/individualImage?{listing[-1]['query']}")
        assert png_size(image) == grid_size(*size)
    histograms = tensorboard.json("/data/plugin/histograms/tags")["vae"]
    assert "latent/kl_per_dim" in histograms and "latent/kl_per_dim" not in tensorboard.json(
        "/data/plugin/histograms/tags"
    ).get("ae", {})


def test_tensorboard_hparams_table_compares_the_runs(
    tensorboard: TensorBoardServer, vae_run: Path, trained: dict[str, Path]
) -> None:
    experiment = tensorboard.json("/data/plugin/hparams/experiment", {"experimentName": ""})
    infos = {h["name"]: h for h in experiment["hparamInfos"]}
    assert set(infos) == HPARAMS and sorted(infos["model"]["domainDiscrete"]) == ["ae", "vae"]
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"test/neg_elbo", "test/mse", "val/loss"} <= metrics
    request = {
        "experimentName": "",
        "startIndex": 0,
        "sliceSize": 10,
        "allowedStatuses": ["STATUS_SUCCESS"],
        "colParams": [{"metric": {"tag": "test/neg_elbo", "group": ""}}, {"hparam": "model"}],
    }
    groups = {
        g["name"]: g
        for g in tensorboard.json("/data/plugin/hparams/session_groups", request)["sessionGroups"]
    }
    assert set(groups) == {"ae", "vae"}
    vae, ae = groups["vae"], groups["ae"]
    assert vae["hparams"]["model"] == "vae" and vae["hparams"]["beta"] == 1.0 and "beta" not in ae["hparams"]
    for group, run in ((vae, vae_run), (ae, trained["ae"])):
        served = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        final = read_metrics(run)
        assert {tag: served[tag] for tag in final} == pytest.approx(final, rel=1e-6)
    assert "test/neg_elbo" in {m["name"]["tag"] for m in vae["metricValues"]}


def test_tensorboard_projector_serves_the_embedding(tensorboard: TensorBoardServer) -> None:
    info = tensorboard.json("/data/plugin/projector/info?run=vae")
    (embedding,) = info["embeddings"]
    assert embedding["tensorShape"] == [PROJECTED, 32]
    name = urllib.parse.quote(embedding["tensorName"])
    metadata = tensorboard.get(f"/data/plugin/projector/metadata?run=vae&name={name}").decode().splitlines()
    assert len(metadata) == PROJECTED + 1
    tensor = tensorboard.get(f"/data/plugin/projector/tensor?run=vae&name={name}")
    assert len(tensor) == PROJECTED * 32 * 4  # float32
    sprite = tensorboard.get(f"/data/plugin/projector/sprite_image?run=vae&name={name}")
    assert png_size(sprite)[0] == math.ceil(math.sqrt(PROJECTED)) * 28


# -- in process: fixed inputs, the AE's fitted Gaussian, ranks, skipping ------------------
def fit_small(tmp_path: Path, model: str):  # -> aevae.commands.train.Run
    """Two short epochs in this process, TensorBoard logger and default callbacks on."""
    cfg = compose_config(
        [
            f"model={model}",
            f"data.root={mnist_root()}",
            "data.val_size=500",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=5",
            "trainer.num_sanity_val_steps=0",
            "callbacks.progress_bar.refresh_rate=0",
            "~callbacks.projector",
            "callbacks.histograms.per_dim=true",
            "callbacks.prior_samples.fit_images=1000",
            "test=false",
        ],
        output_dir=tmp_path,
    )
    run = build(cfg)
    recorded: dict[str, list] = {}
    for callback in run.trainer.callbacks:
        for method in ("inputs", "latents"):
            if isinstance(callback, Reconstructions | PriorSamples | Interpolations) and hasattr(
                callback, method
            ):
                key, original = f"{callback.name}.{method}", getattr(callback, method)

                def record(*args, _key=key, _original=original):  # noqa: ANN202
                    out = _original(*args)
                    recorded.setdefault(_key, []).append(
                        tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()
                    )
                    return out

                setattr(callback, method, record)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    return run, recorded


def same(a, b) -> bool:  # noqa: ANN001
    return all(map(torch.equal, a, b)) if isinstance(a, tuple) else torch.equal(a, b)


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_fixed_inputs_are_the_same_every_epoch_and_every_run(tmp_path: Path, model: str) -> None:
    run, recorded = fit_small(tmp_path, model)
    fixed = ["reconstructions.inputs", "interpolations.inputs"]
    fixed += ["prior_samples.inputs"] if model == "ae" else []  # the images the AE's Gaussian is fitted to
    assert set(fixed) <= set(recorded) and ("prior_samples.inputs" in recorded) == (model == "ae")
    for key in fixed:
        first, *later = recorded[key]
        assert len(later) == 1 and same(first, later[0]), key
    # a fresh callback (another run, or a resumed one) picks the very same inputs
    fresh = {
        "reconstructions": Reconstructions(),
        "prior_samples": PriorSamples(fit_images=1000),
        "interpolations": Interpolations(),
    }
    for name, callback in fresh.items():
        if f"{name}.inputs" in recorded:
            assert same(callback.inputs(run.trainer, run.model), recorded[f"{name}.inputs"][0]), name
    generator = torch.Generator(run.model.device).manual_seed(0)
    noise = torch.randn(64, 32, generator=generator, device=run.model.device)
    latents = recorded["prior_samples.latents"]
    if model == "vae":  # decoded straight from the prior, the same draws every epoch
        assert len(latents) == 2 and all(torch.equal(z, noise) for z in latents)
    else:  # the same draws through a Gaussian refitted to the training codes each epoch
        assert not torch.equal(latents[0], latents[1])
        train_images = pick_images(run.trainer, "train", 1000, 0, run.model.device)[0]
        with torch.no_grad():
            codes = encode_all(run.model, train_images)
        torch.testing.assert_close(latents[1], gaussian_draws(noise, *fit_gaussian(codes)))
    events_dir = tmp_path / "tensorboard"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = EventAccumulator(str(events_dir), size_guidance={"images": 0, "histograms": 0}).Reload()
    assert all(len(logged.Images(tag)) == 2 for tag in GRID_SIZES)
    per_dim = [tag for tag in logged.Tags()["histograms"] if tag.startswith("latent_dims/")]
    assert per_dim == [f"latent_dims/dim_{d:03d}" for d in range(32)]
    assert ("latent/kl_per_dim" in logged.Tags()["histograms"]) == (model == "vae")


def test_fit_gaussian_recovers_mean_and_covariance() -> None:
    generator = torch.Generator().manual_seed(0)
    mean = torch.tensor([1.0, -2.0, 0.5, 3.0])
    mixing = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.3, 0, 0], [0, -1.0, 2.0, 0], [0.2, 0, 0, 0.1]])
    covariance = mixing @ mixing.T
    latents = mean + torch.randn(200_000, 4, generator=generator) @ mixing.T
    fitted_mean, factor = fit_gaussian(latents)
    torch.testing.assert_close(fitted_mean, mean, atol=0.02, rtol=0)
    torch.testing.assert_close(factor @ factor.T, covariance, atol=0.03, rtol=0)
    draws = gaussian_draws(torch.randn(200_000, 4, generator=generator), fitted_mean, factor)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), covariance, atol=0.05, rtol=0)


def test_fit_gaussian_survives_dead_units() -> None:
    """A unit a ReLU killed is constant: its variance is 0 and the covariance singular."""
    latents = torch.randn(1000, 3, generator=torch.Generator().manual_seed(1))
    latents[:, 1] = 0.0
    draws = gaussian_draws(torch.randn(50, 3), *fit_gaussian(latents))
    assert torch.isfinite(draws).all() and torch.allclose(draws[:, 1], torch.zeros(50), atol=1e-5)


def test_interpolation_paths() -> None:
    a, b = torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    t = torch.linspace(0, 1, 5)
    for path in (lerp(a, b, t), slerp(a, b, t)):
        assert path.shape == (2, 5, 2) and torch.isfinite(path).all()
        torch.testing.assert_close(path[:, 0], a)
        torch.testing.assert_close(path[:, -1], b)
    torch.testing.assert_close(lerp(a, b, t)[0, 2], torch.tensor([1.5, 1.5]))
    norms = slerp(a, b, t)[0].norm(dim=-1)  # orthogonal codes of equal norm: the arc keeps the norm
    torch.testing.assert_close(norms, torch.full((5,), 3.0))
    torch.testing.assert_close(slerp(a, b, t)[1], lerp(a, b, t)[1])  # parallel: a straight line


@pytest.mark.parametrize(
    "callback,kwargs,message",
    [
        (
            Interpolations,
            {"mode": "cubic"},
            "callbacks.interpolations.mode='cubic' is not known; choose one of",
        ),
        (Reconstructions, {"every_n_epochs": 0}, "callbacks.reconstructions.every_n_epochs=0 must be"),
        (Reconstructions, {"num_images": 10}, "num_images=10 must be a multiple of per_row=8"),
        (PriorSamples, {"num_samples": -1}, "callbacks.prior_samples.num_samples=-1 must be a positive"),
        (Interpolations, {"split": "dev"}, "callbacks.interpolations.split='dev' is not known"),
    ],
)
def test_bad_settings_are_user_errors(callback: type, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(")):
        callback(**kwargs)


def test_bad_setting_gets_one_line_from_the_entry_point(tmp_path: Path) -> None:
    proc = aevae_train("callbacks.interpolations.mode=cubic", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("aevae-train: error:")]
    expected = "callbacks.interpolations.mode='cubic' is not known; choose one of ['lerp', 'slerp']"
    assert errors == [f"aevae-train: error: {expected}"]


def test_nothing_happens_on_other_ranks(tmp_path: Path) -> None:
    """Off rank zero no writer is fetched and the model is never touched (it is None here)."""
    logger = TensorBoardLogger(tmp_path, name="", version="")
    trainer = SimpleNamespace(loggers=[logger], is_global_zero=False, current_epoch=0, global_step=1)
    for callback in (Reconstructions(), PriorSamples(), Interpolations()):
        callback.on_train_epoch_end(trainer, None)
    assert logger._experiment is None and not list(tmp_path.iterdir())


def test_runs_without_tensorboard_log_one_line_and_finish(tmp_path: Path) -> None:
    env = {**os.environ, "AEVAE_DATA": str(mnist_root()), "OMP_NUM_THREADS": "1"}
    exe = str(Path(sys.executable).with_name("aevae-train"))
    procs = {
        logger: subprocess.Popen(
            [exe, "trainer=debug", f"logger={logger}", f"hydra.run.dir={tmp_path / logger}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for logger in ("none", "csv")
    }
    for logger, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        lines = [line for line in out.splitlines() if "skipped" in line]
        assert len(lines) == 1 and lines[0].startswith("INFO aevae.callbacks: callbacks "), out
        names, reason = lines[0].removeprefix("INFO aevae.callbacks: callbacks ").split(" skipped: ")
        # a CSV file takes the hyper-parameters and the learning rate, not images or histograms
        skipped = {*TENSORBOARD_CALLBACKS} | ({"hparams", "lr_monitor"} if logger == "none" else set())
        assert set(names.split(", ")) == skipped and reason.startswith("no logger takes them"), lines
        assert (tmp_path / logger / "metrics.json").is_file()
        assert not (tmp_path / logger / "tensorboard").exists()
    csv_header = (tmp_path / "csv" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "lr-Adam" in csv_header.split(",")  # the learning rate needs a logger, not TensorBoard
    assert "latent_dim: 32" in (tmp_path / "csv" / "csv" / "hparams.yaml").read_text().splitlines()


def test_histograms_count_every_value(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from aevae.callbacks.histograms import add_histogram

    values = torch.cat([torch.randn(1000, generator=torch.Generator().manual_seed(0)), torch.tensor([5.0])])
    with SummaryWriter(str(tmp_path)) as writer:
        add_histogram(writer, "spread", values, 1, bins=64)
        add_histogram(writer, "dead", torch.zeros(10), 1, bins=64)  # one value only
    logged = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0}).Reload()
    spread = logged.Histograms("spread")[0].histogram_value
    assert len(spread.bucket) == 64 and sum(spread.bucket) == spread.num == 1001 and spread.max == 5.0
    assert spread.sum == pytest.approx(float(values.sum()), rel=1e-6) and spread.bucket[-1] == 1
    dead = logged.Histograms("dead")[0].histogram_value
    assert list(dead.bucket) == [10] and dead.min == dead.max == 0
