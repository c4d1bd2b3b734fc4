"""aevae's image-folder path against torchvision's ImageFolder + ToTensor + DataLoader, timed in one run.

On a folder of N colour 32x32 PNG files (made here from crops of real photos, or --folder):
  (a) data delivery alone: images/s of one epoch of batches handed to the loop, no model;
  (b) one epoch of a tutorial-sized MLP VAE (3072-128-32) fed by each path;
  (c) data setup: decoding the folder into the cache (first run) against mapping it (second run).

    python scripts/data_speed.py --images 50000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from aevae.commands.benchmark import aevae_run
from aevae.data import ImageDataModule
from aevae.data.batches import count_images
from aevae.losses import kl_std_normal

PHOTOS = (
    Path(os.environ.get("AEVAE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "photos"
)


def make_folder(folder: Path, n: int, seed: int = 0) -> None:
    """`n` 32x32 RGB PNGs in 10 class folders: random crops of the photos (noise if none here)."""
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*")) if p.suffix in (".png", ".jpg")]
    for c in range(10):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if photos:
            photo = photos[i % len(photos)]
            side = int(rng.integers(32, min(photo.size) // 2))
            x, y = (int(rng.integers(0, d - side)) for d in photo.size)
            image = photo.crop((x, y, x + side, y + side)).resize((32, 32), Image.BILINEAR)
        else:
            image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        image.save(folder / f"class{i % 10}" / f"{i:06d}.png")


def vae_parts() -> tuple[nn.Module, nn.Module]:
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3072, 128), nn.ReLU(), nn.Linear(128, 64))
    decoder = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 3072))
    return encoder, decoder


def dataloader_epoch(loader, train: bool) -> tuple[float, int]:
    """One epoch of torchvision's path, optionally training the tutorial-sized VAE on it."""
    torch.manual_seed(0)
    encoder, decoder = vae_parts()
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3, fused=True)
    images, start = 0, time.perf_counter()
    for x, _ in loader:
        images += len(x)
        if train:
            mu, log_var = encoder(x).chunk(2, dim=1)
            z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
            recon = F.binary_cross_entropy_with_logits(decoder(z), x.flatten(1), reduction="none").sum(1)
            loss = (recon + kl_std_normal(mu, log_var)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start, images


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, as a user sets them")
    parser.add_argument("--folder", type=Path, help="an existing folder of 3x32x32 images instead")
    parser.add_argument("--json", type=Path, help="also write the figures and ratios here")
    args = parser.parse_args()
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    work = Path(tempfile.mkdtemp(prefix="aevae-data-speed-"))
    os.environ["AEVAE_CACHE"] = str(work / "cache")
    try:
        folder = args.folder or work / "images"
        if args.folder is None:
            start = time.perf_counter()
            make_folder(folder, args.images)
            print(f"wrote {args.images} PNG files in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        settings = {"name": "image_folder", "path": str(folder), "image_size": 32, "channels": 3}
        split = {"val_fraction": 0.01, "test_fraction": 0.01}  # nearly every image trains, as in ImageFolder

        # (c) setup: decode into the cache, then map it
        setups = []
        for _ in range(2):
            dm = ImageDataModule(**settings, **split)
            start = time.perf_counter()
            dm.setup()
            setups.append(time.perf_counter() - start)

        # (a) delivery alone
        loader = DataLoader(
            datasets.ImageFolder(str(folder), transform=transforms.ToTensor()),
            batch_size=64,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        )
        dataloader_epoch(loader, train=False)  # the workers' start-up is not delivery
        tv_seconds, tv_images = dataloader_epoch(loader, train=False)
        dm.steps_per_chunk = 20
        start, ours = time.perf_counter(), 0
        for chunk in dm.train_dataloader():
            ours += count_images(chunk)
        ours_seconds = time.perf_counter() - start

        # (b) a tutorial-sized VAE epoch on each path
        tv_train, _ = dataloader_epoch(loader, train=True)
        overrides = [
            "data=image_folder",
            f"data.path={folder}",
            "data.image_size=32",
            *(f"data.{k}={v}" for k, v in split.items()),
            "model.hidden_dims=[128]",
            "logger=none",
            "callbacks=none",
            "+callbacks.timer._target_=aevae.callbacks.EpochTimer",
            "trainer.enable_progress_bar=false",
            "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0",
        ]
        result = aevae_run("vae", overrides, epochs=2)
        aevae_train = min(result["epoch_times"])

        rows = [
            (
                "(a) delivery, images/s",
                tv_images / tv_seconds,
                ours / ours_seconds,
                "aevae / DataLoader >= 10",
            ),
            ("(b) VAE epoch, s", tv_train, aevae_train, "aevae / DataLoader <= 0.6"),
            ("(c) setup, s (1st / 2nd run)", setups[0], setups[1], "1st / 2nd >= 10"),
        ]
        print(
            f"{len(dm.splits['train'][0])} training images, 3x32x32 PNG; {os.cpu_count()} cores, "
            f"DataLoader num_workers={args.workers}"
        )
        print(f"{'':32} {'DataLoader':>12} {'aevae':>12} {'ratio':>8}  goal")
        ratios = {}
        for name, theirs, mine, goal in rows:
            ratio = theirs / mine if name.startswith("(c)") else mine / theirs
            ratios[name[:3]] = round(ratio, 3)
            print(f"{name:32} {theirs:12.2f} {mine:12.2f} {ratio:8.2f}  {goal}")
        if args.json:
            args.json.write_text(json.dumps({"rows": rows, "ratios": ratios}, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
