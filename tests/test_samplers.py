"""The samplers (`sampler=auto|prior|gaussian|gmm`): EM, the fitted Gaussian, the defaults' draws,
refusals, and aevae-sample / aevae-eval with them on a real short run."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor

from aevae.config import UserError, compose_config
from aevae.sampling.latents import fit_gaussian
from aevae.sampling.samplers import GaussianSampler, GMMSampler, make_sampler
from aevae.validation import validate
from conftest import command, finish, png_size, run, start

#: Small but complete eval options (tests/test_eval.py), a GMM of few EM iterations.
SMALL_EVAL = (
    "eval.iw_samples=64",
    "eval.num_samples=1000",
    "eval.interpolation_pairs=50",
    "eval.judge_epochs=1",
    "sampler.iterations=5",
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as the subprocess runs have (conftest.run_env): on 2 busy cores each of
    EM's many small steps would otherwise wait for a second thread to be scheduled."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mixture_data(n: int, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """`n` draws of a known two-component mixture in 2-D, and its parameters."""
    truth = {
        "weights": torch.tensor([0.3, 0.7]),
        "means": torch.tensor([[-4.0, 0.0], [3.0, 2.0]]),
        "factors": torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.7, 0.0], [-0.3, 1.2]]]),
    }
    which = torch.multinomial(truth["weights"], n, replacement=True, generator=generator)
    noise = torch.randn(n, 2, generator=generator)
    x = truth["means"][which] + (truth["factors"][which] @ noise[:, :, None]).squeeze(2)
    return x, truth


def mixture_log_likelihood(gmm: GMMSampler, x: Tensor) -> float:
    """The mean log-likelihood of `x` under the fitted mixture, by torch.distributions."""
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=gmm.weights),
        torch.distributions.MultivariateNormal(gmm.means, scale_tril=gmm.factors),
    )
    return mixture.log_prob(x.double()).mean().item()


def test_em_raises_the_likelihood_every_iteration() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([mixture_data(2000, generator)[0], 6 + torch.randn(500, 2, generator=generator)])
    gmm = GMMSampler(components=4, iterations=40, tolerance=0.0, init="random").fit(x)
    steps = torch.tensor(gmm.log_likelihoods).diff()
    assert len(gmm.log_likelihoods) == 40 and steps.sum() > 0.01  # it did climb from the start
    assert (steps >= -1e-9).all(), steps
    # the E-step's log-likelihood is the mixture's own, and the last M-step did not lower it
    assert mixture_log_likelihood(gmm, x) >= gmm.log_likelihoods[-1] - 1e-9
    assert gmm.e_step(x.double())[1].item() == pytest.approx(mixture_log_likelihood(gmm, x), abs=1e-9)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_em_recovers_a_two_component_mixture(init: str) -> None:
    x, truth = mixture_data(20_000, torch.Generator().manual_seed(1))
    gmm = GMMSampler(components=2, init=init, seed=3).fit(x)
    order = gmm.means[:, 0].argsort()  # components come in any order
    torch.testing.assert_close(gmm.weights[order].float(), truth["weights"], atol=0.01, rtol=0)
    torch.testing.assert_close(gmm.means[order].float(), truth["means"], atol=0.05, rtol=0)
    covariances = gmm.factors[order] @ gmm.factors[order].transpose(1, 2)
    expected = truth["factors"] @ truth["factors"].transpose(1, 2)
    torch.testing.assert_close(covariances.float(), expected, atol=0.06, rtol=0)
    # its draws follow it: the mixture's mean, and the share of draws left of the gap
    draws = gmm.sample(50_000, torch.Generator().manual_seed(2))
    assert draws.dtype == x.dtype and draws.shape == (50_000, 2)
    torch.testing.assert_close(draws.mean(0), x.mean(0), atol=0.05, rtol=0)
    assert (draws[:, 0] < -0.5).float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_gaussian_sampler_matches_mean_and_covariance_of_codes_of_any_shape() -> None:
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.3, 0, 0], [0, -1.0, 2.0, 0], [0.2, 0, 0, 0.1]])
    mean = torch.tensor([1.0, -2.0, 0.5, 3.0])
    codes = mean + torch.randn(100_000, 4, generator=generator) @ mixing.T
    sampler = GaussianSampler().fit(codes.reshape(-1, 1, 2, 2))  # a spatial code grid
    draws = sampler.sample(100_000, generator)
    assert draws.shape == (100_000, 1, 2, 2)
    torch.testing.assert_close(draws.flatten(1).mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(draws.flatten(1).T), mixing @ mixing.T, atol=0.05, rtol=0)
    gmm = GMMSampler(components=3, iterations=5).fit(codes.reshape(-1, 2, 2))
    assert gmm.sample(7, generator).shape == (7, 2, 2)


def tiny_model(name: str, tmp_path: Path):  # noqa: ANN201
    cfg = compose_config([f"model={name}", "latent_dim=4", "model.hidden_dims=[8]"], output_dir=tmp_path)
    return instantiate(cfg.model, _convert_="all").eval()


def test_auto_draws_exactly_what_the_models_drew_before(tmp_path: Path) -> None:
    """A VAE decodes the seeded standard-normal noise itself; an AE maps the same noise through
    the Gaussian fitted to its codes: mean + noise @ factor.T."""
    vae, ae = tiny_model("vae", tmp_path), tiny_model("ae", tmp_path)
    noise = torch.randn(64, 4, generator=torch.Generator().manual_seed(7))
    drawn = make_sampler({"name": "auto"}, vae).sample(64, torch.Generator().manual_seed(7))
    assert torch.equal(drawn, noise)
    codes = torch.randn(500, 4, generator=torch.Generator().manual_seed(8)) * 3 + 1
    mean, factor = fit_gaussian(codes)
    drawn = make_sampler({"name": "auto"}, ae).fit(codes).sample(64, torch.Generator().manual_seed(7))
    assert torch.equal(drawn, mean + noise @ factor.T)
    assert not make_sampler({"name": "prior"}, vae).fits and make_sampler({"name": "auto"}, ae).fits


def test_prior_of_an_ae_and_bad_sampler_keys_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"^sampler=prior: model=ae has no prior .*sampler=gaussian or sampler=gmm"
    ):
        make_sampler({"name": "prior"}, tiny_model("ae", tmp_path))
    bad = {
        (
            "sampler=gmm",
            "sampler.components=0",
        ): "sampler.components=0 is not allowed: expected an integer >= 1",
        (
            "sampler=gmm",
            "sampler.init=kmeans",
        ): "sampler.init='kmeans' is not allowed: expected one of kmeans++",
        ("sampler=gmm", "sampler.ridge=0"): "sampler.ridge=0 is not allowed: expected a number > 0",
        (
            "sampler.name=gmn",
        ): "sampler.name='gmn' is not allowed: expected one of auto, prior, gaussian, gmm",
    }
    for overrides, message in bad.items():
        with pytest.raises(UserError) as err:
            validate(compose_config(list(overrides), output_dir=tmp_path))
        assert str(err.value).startswith(message) and "\n" not in str(err.value), overrides
    with pytest.raises(UserError, match="^sampler=gmm with components=0"):
        GMMSampler(components=0)  # from Python (aevae.sample), without the config check
    with pytest.raises(UserError, match=r"^sampler.components=50 is more than the 20 codes"):
        GMMSampler(components=50).fit(torch.randn(20, 3))


def test_aevae_sample_with_gmm_writes_prior_samples(trained: dict[str, Path], tmp_path: Path) -> None:
    """sampler=gmm on the AE writes its pictures; sampler=prior, which the AE has none of, ends in
    one line before anything is written."""
    options = {"gmm": ("sampler=gmm", "sampler.iterations=5"), "prior": ("sampler=prior",)}
    procs = {
        name: start(*command("sample"), f"run_dir={trained['ae']}", f"out={tmp_path / name}", *extra)
        for name, extra in options.items()
    }
    prior = procs.pop("prior")
    refused, _ = prior.communicate(timeout=900)
    finish(procs["gmm"], "aevae-sample sampler=gmm")
    assert png_size(tmp_path / "gmm" / "prior_samples.png") == (242, 242)  # 64 samples, 8 a row
    assert (tmp_path / "gmm" / "reconstructions.png").is_file()
    assert prior.returncode == 2 and not (tmp_path / "prior").exists()
    assert refused.strip().splitlines() == [
        "aevae-sample: error: sampler=prior: model=ae has no prior to sample codes from; "
        "use sampler=gaussian or sampler=gmm (fitted to the training codes)"
    ]


def test_aevae_eval_scores_every_listed_sampler(trained: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    proc = run(
        *command("eval"),
        f"run_dir={trained['ae']}",
        f"out={out}",
        "sampler=gmm",
        "eval.samplers=[gaussian,gmm]",
        *SMALL_EVAL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(out.read_text())["metrics"]
    scores = ("digit_likeness", "inception_score", "fd_judge")
    for prefix in ("samples", "samples/gaussian", "samples/gmm"):
        assert all(math.isfinite(metrics[f"{prefix}/{score}"]) for score in scores), metrics
        assert 0.1 <= metrics[f"{prefix}/digit_likeness"] <= 1 and metrics[f"{prefix}/fd_judge"] > 0
    # the AE draws nothing before its samples: the configured sampler's are those of the same seed
    assert all(metrics[f"samples/{score}"] == metrics[f"samples/gmm/{score}"] for score in scores)
    assert metrics["samples/gmm/fd_judge"] != metrics["samples/gaussian/fd_judge"]
    assert "samples/gaussian/judge_accuracy" not in metrics and "samples/judge_accuracy" in metrics
