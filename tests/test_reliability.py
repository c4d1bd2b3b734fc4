"""Bad input gets one clear line; a killed run resumes with nothing lost; NaNs stop training."""

from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from aevae import validation
from aevae.commands.train import build
from aevae.config import compose_config
from aevae.data import DATASETS, DataError, MNISTDataModule
from aevae.data.shapes import NAMES
from aevae.engine.checkpointing import peek
from aevae.engine.chunked import NonFiniteLossError
from aevae.models import load_checkpoint
from aevae.models.nets import ACTIVATIONS
from conftest import EXE, QUICK, QUIET, finish, mnist_root, read_metrics, run, start, write_idx


def train(*overrides: str) -> subprocess.CompletedProcess:
    return run(EXE, *overrides)


# -- bad input: one line naming the key, no traceback, nothing written ---------------------
BAD_INPUTS = [
    (["latent_dim=0"], "latent_dim=0"),
    (["latent_dim=-3"], "latent_dim=-3"),
    (["latent_dim=abc"], "latent_dim='abc'"),
    (["latent_dim=2.5"], "latent_dim=2.5"),
    (["seed=xyz"], "seed='xyz'"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["data.batch_size=100000"], "data.batch_size=100000"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0"),
    (["data.val_size=-1"], "data.val_size=-1"),
    (["data.val_size=60000"], "data.val_size=60000"),
    (["data.train_size=0"], "data.train_size=0"),
    (["data.train_size=59000"], "data.train_size=59000 + data.val_size=5000"),
    (["data.name=cifar100"], "data.name='cifar100'"),
    (["data.download=maybe"], "data.download='maybe'"),
    (["data.root=/nonexistent", "data.download=false"], "data.root"),
    (["model.hidden_dims=[0]"], "model.hidden_dims=[0]"),
    (["model.hidden_dims=[128,-5]"], "model.hidden_dims=[128,-5]"),
    (["model.hidden_dims=abc"], "model.hidden_dims='abc'"),
    (["model.lr=0"], "model.lr=0"),
    (["model.lr=-0.001"], "model.lr=-0.001"),
    (["model.lr=fast"], "model.lr='fast'"),
    (["model=vae", "model.beta=-1"], "model.beta=-1"),
    (["model.latent_activation=swish"], "model.latent_activation='swish'"),
    (["model.net.activation=softmax"], "model.net.activation='softmax'"),
    (["+model.image_shape=[3,32,32]"], "model.image_shape=[3,32,32]"),
    (["model=vae", "loss=mse"], "loss=mse"),
    (["loss=gaussian", "loss.sigma=0"], "loss.sigma=0"),
    (["trainer.max_epochs=-5"], "trainer.max_epochs=-5"),
    (["trainer.max_steps=-2"], "trainer.max_steps=-2"),
    (["trainer.accelerator=quantum"], "trainer.accelerator='quantum'"),
    (["trainer.devices=0"], "trainer.devices=0"),
    (["trainer.precision=8-bit"], "trainer.precision='8-bit'"),
    (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5"),
    (["trainer.limit_val_batches=-1"], "trainer.limit_val_batches=-1"),
    (["trainer.log_every_n_steps=-1"], "trainer.log_every_n_steps=-1"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval=0"),
    (["trainer.accumulate_grad_batches=4"], "trainer.accumulate_grad_batches"),
    (["steps_per_chunk=0"], "steps_per_chunk=0"),
    (["steps_per_chunk=7"], "steps_per_chunk=7 must divide"),
    (["callbacks.step_checkpoint.every_n_train_steps=0"], "callbacks.step_checkpoint.every_n_train_steps=0"),
    (["ckpt_path=/nonexistent.ckpt"], "ckpt_path=/nonexistent.ckpt"),
    (["resume=/nonexistent"], "resume=/nonexistent"),
    (["data=image_folder"], "data=image_folder needs data.path=DIR"),
    (["data=image_folder", "data.path=/nonexistent"], "data.path=/nonexistent is not a folder of images"),
    (["data=array", "data.path=/etc/hostname"], "data=array reads .npy, .npz or .pt files"),
    (["data=image_folder", "data.path=/tmp", "data.channels=2"], "data.channels=2"),
    (
        ["data=cifar10", "data.root=/nonexistent", "data.download=false"],
        "cifar-10-batches-py/data_batch_1 not found",
    ),
    (
        ["model/net=conv", "data=celeba", "data.image_size=30", "data.download=false"],
        "model/net=conv with 2 blocks takes",
    ),
]


def test_at_least_thirty_bad_inputs_are_tried() -> None:
    assert len(BAD_INPUTS) >= 30


def _check_bad_input(case: tuple[list[str], str], run_dir: Path) -> str | None:
    overrides, expected = case
    proc = train(*overrides, f"hydra.run.dir={run_dir}", "logger=none")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("aevae-train: error: ")]
    problems = []
    if proc.returncode == 0:
        problems.append("exited 0")
    if len(errors) != 1 or expected not in errors[0]:
        problems.append(f"expected one error line with {expected!r}, got {errors}")
    elif (proc.stdout + proc.stderr).count(message := errors[0].removeprefix("aevae-train: error: ")) != 1:
        problems.append("printed the error more than once")
    elif (run_dir / "train.log").is_file() and message not in (run_dir / "train.log").read_text():
        problems.append("left the error out of train.log")  # (no log when refused before Hydra ran)
    if "Traceback" in proc.stderr + proc.stdout:
        problems.append("printed a traceback")
    if (run_dir / "checkpoints").exists():
        problems.append("wrote checkpoints")
    return f"{overrides}: {'; '.join(problems)}\n{proc.stderr[-800:]}" if problems else None


def test_bad_inputs_get_one_line_naming_the_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda ic: _check_bad_input(ic[1], tmp_path / str(ic[0])), enumerate(BAD_INPUTS))
        failures = [r for r in results if r]
    assert not failures, "\n".join(failures)
    # a failed run leaves its error in its run dir
    assert "data.batch_size=0" in (tmp_path / "5" / "error.txt").read_text()


def test_schema_knows_the_same_names_as_the_code() -> None:
    assert set(validation.ACTIVATIONS) == set(ACTIVATIONS)
    assert set(validation.DATASET_NAMES) == set(NAMES) and set(validation.MNIST_FAMILY) == set(DATASETS)


# -- damaged data files -----------------------------------------------------------------------
@pytest.fixture
def fake_mnist(tmp_path: Path) -> Path:
    write_idx(tmp_path / "MNIST" / "raw", n_train=30, n_test=10)
    return tmp_path


def test_truncated_file_is_named(fake_mnist: Path) -> None:
    images = fake_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match=f"{images} has .* bytes but its header promises 30 items"):
        MNISTDataModule(root=str(fake_mnist), download=False, val_size=5).setup()


def test_wrong_magic_is_named(fake_mnist: Path) -> None:
    labels = fake_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])  # an images header on labels
    dm = MNISTDataModule(root=str(fake_mnist), download=False, val_size=5)
    with pytest.raises(DataError, match=f"{labels} is not an IDX file of uint8 data .*expected 0x00000801"):
        dm.setup()


def test_wrong_image_size_is_named(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, n_train=30, n_test=10)
    header = b"\x00\x00\x08\x03" + (30).to_bytes(4, "big") + (32).to_bytes(4, "big") * 2
    (raw / "train-images-idx3-ubyte").write_bytes(header + bytes(30 * 32 * 32))
    with pytest.raises(DataError, match=r"holds items of shape \(32, 32\), expected \(28, 28\)"):
        MNISTDataModule(root=str(tmp_path), download=False, val_size=5).setup()


def test_damaged_data_is_refused_through_the_entry_point(fake_mnist: Path, tmp_path: Path) -> None:
    images = fake_mnist / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:50])
    proc = train(
        f"data.root={fake_mnist}", "data.val_size=5", "data.batch_size=8", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"aevae-train: error: {images} has 50 bytes" in proc.stderr


# -- crash safety ----------------------------------------------------------------------------
KILL_RUN = (
    "model=vae",
    "data.train_size=12800",  # 200 steps per epoch
    "data.val_size=1000",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "callbacks.step_checkpoint.every_n_train_steps=40",
    *QUIET,
)


def test_kill_9_mid_epoch_then_resume_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL after the first checkpoint, `resume=RUN_DIR`: the final test metrics are
    bitwise those of an uninterrupted run with the same seed."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = start(EXE, *KILL_RUN, f"hydra.run.dir={straight}")
    victim = start(EXE, *KILL_RUN, f"hydra.run.dir={killed}")
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "metrics.json").exists()
    step = peek(last)["global_step"]
    assert step > 0 and step % 200, f"the checkpoint should be mid-epoch, got step {step}"

    resumed = train(f"resume={killed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    finish(reference, "the uninterrupted run")
    assert read_metrics(killed) == read_metrics(straight)  # exact float equality

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(killed / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 599  # appended, no step twice


def test_ckpt_path_last_continues_the_run_dir(trained: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "ae"
    shutil.copytree(trained["ae"], run_dir)
    assert peek(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 80  # 2 epochs of 40
    overrides = [o for o in QUICK if "max_epochs" not in o]
    proc = train(*overrides, "trainer.max_epochs=3", "ckpt_path=last", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert peek(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 120


def test_checkpoints_are_written_whole(tmp_path: Path) -> None:
    from aevae.engine.checkpointing import AtomicCheckpointIO

    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    assert torch.load(target, weights_only=True)["state_dict"]["w"].sum() == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


# -- NaN guard ---------------------------------------------------------------------------------
def fit_with_a_nan(
    tmp_path: Path, nan_step: int, *overrides: str, spy: L.Callback | None = None
) -> tuple[Any, NonFiniteLossError]:
    """Train 3 epochs (20 steps a chunk) whose optimizer step `nan_step` has a NaN loss."""
    common = ("data.train_size=1280", "data.val_size=500", "logger=none", "trainer.max_epochs=3")
    common = (*common, "test=false")
    cfg = compose_config([f"data.root={mnist_root()}", *common, *QUIET, *overrides], output_dir=tmp_path)
    run_ = build(cfg)
    run_.trainer.callbacks.extend([spy] if spy else [])
    terms, steps = run_.model.terms, []

    def poisoned(x: torch.Tensor, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        out = terms(x, *args, **kwargs)  # evaluation passes its seeded generator
        if run_.model.training:  # not the sanity check or validation
            steps.append(1)
        return {"loss": out["loss"] * float("nan")} if run_.model.training and len(steps) == nan_step else out

    run_.model.terms = poisoned
    with pytest.raises(NonFiniteLossError) as err:
        run_.trainer.fit(run_.model, datamodule=run_.datamodule)
    return run_, err.value


def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path: Path) -> None:
    _, err = fit_with_a_nan(tmp_path, 31, "callbacks.step_checkpoint.every_n_train_steps=20")
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert str(err) == (
        f"non-finite loss (nan) at optimizer step 31: training stopped; the last good checkpoint is "
        f"{last} (step 20); lower model.lr or set trainer.gradient_clip_val"
    )
    model = load_checkpoint(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert peek(last)["global_step"] == 20


class EpochEnds(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(trainer.current_epoch)


def test_a_nan_is_caught_before_the_next_chunk_and_before_the_epoch_ends(tmp_path: Path) -> None:
    """A chunk's losses are read when the next chunk starts (the device has finished them by
    then, so the host never holds it up), and at once for the last chunk of an epoch."""
    # two chunks of 20 steps an epoch; the NaN is in the first
    run_, err = fit_with_a_nan(tmp_path / "mid", 5, "data.train_size=2560", "trainer.log_every_n_steps=20")
    assert "at optimizer step 5: training stopped; no checkpoint was saved before it" in str(err)
    adam_steps = {int(state["step"]) for state in run_.trainer.optimizers[0].state.values()}
    assert adam_steps == {20}  # the first chunk's updates, none of the second's

    epoch_ends = EpochEnds()
    no_validation = ("trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null")
    _, err = fit_with_a_nan(tmp_path / "end", 30, *no_validation, spy=epoch_ends)  # epoch 2: one chunk
    assert "at optimizer step 30: training stopped; the last good checkpoint is" in str(err)
    assert epoch_ends.epochs == [0]  # no callback saw the second epoch's weights
    checkpoints = tmp_path / "end" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == ["epoch000.ckpt", "last.ckpt"]
    assert peek(checkpoints / "last.ckpt")["global_step"] == 20


# -- reproducibility and checkpoint loading ---------------------------------------------------
REPRO = (
    "data.train_size=2560",
    "data.val_size=500",
    "trainer.max_epochs=1",
    "logger=none",
    "callbacks.progress_bar.refresh_rate=0",
    "model=vae",
)


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path: Path) -> None:
    for name, proc in [(n, start(EXE, *REPRO, "seed=7", f"hydra.run.dir={tmp_path / n}")) for n in "ab"]:
        finish(proc, f"run {name}")
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()
    assert train(*REPRO, "seed=8", f"hydra.run.dir={tmp_path / 'c'}").returncode == 0
    assert read_metrics(tmp_path / "c") != read_metrics(tmp_path / "a")


def test_checkpoint_of_another_model_is_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    vae_ckpt = trained["vae"] / "checkpoints" / "last.ckpt"
    assert torch.load(vae_ckpt, weights_only=True)["aevae_config"]["model"]["latent_dim"] == 32
    for overrides, expected in (
        (["model=ae"], "_target_: checkpoint VAE, this run AE"),
        (["model=vae", "latent_dim=8"], "latent_dim: checkpoint 32, this run 8"),
    ):
        proc = train(*overrides, f"ckpt_path={vae_ckpt}", f"hydra.run.dir={tmp_path}", "logger=none")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"aevae-train: error: ckpt_path={vae_ckpt} holds a different model (" in proc.stderr
        assert expected in proc.stderr
