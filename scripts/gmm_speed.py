"""Seconds of the `sampler=gmm` EM fit on N codes of D dims (60,000 x 16 and x 50 by default).

The codes are those of a trained run's training images (--run-dir), else synthetic ones: a
mixture of 10 random Gaussians. Prints one JSON line per size: seconds, EM iterations, seconds
per iteration, the final mean log-likelihood per code, and the device.

    python scripts/gmm_speed.py --dims 16 50 --device cuda
    python scripts/gmm_speed.py --run-dir outputs/runs/<date>/<time>
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from aevae.sampling.samplers import GMMSampler


def synthetic_codes(n: int, dims: int, device: str, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(10, dims, generator=generator)
    which = torch.randint(10, (n,), generator=generator)
    return (centers[which] + torch.randn(n, dims, generator=generator)).to(device)


def run_codes(run_dir: str, device: str) -> torch.Tensor:
    import aevae

    model = aevae.load(run_dir, device=device)
    return aevae.encode(model, aevae.images(model, "train")[0])


def timed_fit(codes: torch.Tensor, components: int, iterations: int) -> dict[str, float | int | str]:
    sampler = GMMSampler(components=components, iterations=iterations)
    if codes.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    sampler.fit(codes)  # its last log-likelihood is read on the host: the fit is done here
    seconds = time.perf_counter() - start
    steps = len(sampler.log_likelihoods)
    return {
        "codes": len(codes),
        "dims": codes[0].numel(),
        "components": components,
        "seconds": round(seconds, 3),
        "iterations": steps,
        "seconds_per_iteration": round(seconds / steps, 4),
        "log_likelihood": round(sampler.log_likelihoods[-1], 4),
        "device": str(codes.device),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--codes", type=int, default=60_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 50])
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--run-dir", help="fit the codes of this run's training images instead")
    args = parser.parse_args()
    if args.run_dir:
        sets = [run_codes(args.run_dir, args.device)]
    else:
        sets = [synthetic_codes(args.codes, dims, args.device) for dims in args.dims]
    for codes in sets:
        print(json.dumps(timed_fit(codes, args.components, args.iterations)))


if __name__ == "__main__":
    main()
