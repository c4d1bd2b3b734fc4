"""The encoder/decoder nets at every image shape: output shapes, gradients, refused sizes, and the
28x28 MLP and conv nets unchanged."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from aevae.config import UserError, compose_config
from aevae.losses import DiscretizedLogistic
from aevae.models import MLP, VAE, Conv, ResNet

NETS = {"mlp": MLP, "conv": Conv, "resnet": ResNet}
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", NETS)
def test_shapes_and_gradients(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    nets = NETS[name](image_shape=shape, hidden_dims=[16])
    encoder = nets.encoder(10)
    x = torch.rand(3, *shape)
    assert encoder(x).shape == (3, 10)
    for out_channels in (shape[0], 2 * shape[0]):
        encoder.zero_grad()
        decoder = nets.decoder(5, out_channels)
        out = decoder(encoder(x)[:, :5])
        assert out.shape == (3, out_channels, *shape[1:])
        out.square().mean().backward()
        grads = [p.grad for p in [*encoder.parameters(), *decoder.parameters()]]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert all(g.abs().sum() > 0 for g in grads)  # every layer is on the path from image to output
    assert nets.decoder(5)(torch.randn(3, 5)).shape == (3, *shape)  # out_channels defaults to the image's


@pytest.mark.parametrize(
    ("shape", "conv", "resnet"),
    [
        ((1, 28, 28), [32, 64], [64, 128]),
        ((3, 32, 32), [32, 64, 128], [64, 128, 128]),
        ((3, 64, 64), [32, 64, 128, 256], [64, 128, 128, 128]),
        ((3, 32, 64), [32, 64, 128], [64, 128, 128]),  # the smaller side sets the depth: 4x8 maps
    ],
)
def test_auto_channels_halve_down_to_about_4x4(shape, conv: list[int], resnet: list[int]) -> None:
    assert Conv(image_shape=shape).channels == conv and ResNet(image_shape=shape).channels == resnet
    flat = Conv(image_shape=shape).encoder(8)[len(conv) * 2 + 1].in_features  # the first dense layer
    assert flat == conv[-1] * (shape[1] >> len(conv)) * (shape[2] >> len(conv))


@pytest.mark.parametrize("name", ["conv", "resnet"])
@pytest.mark.parametrize(
    ("shape", "channels", "message"),
    [
        ((3, 30, 30), [32, 64, 128], "NET with 3 blocks takes image sizes divisible by 8 [(]e.g. 32, 64[)]"),
        (
            (3, 30, 30),
            "auto",
            "NET with 2 blocks takes image sizes divisible by 4 [(]e.g. 16, 32[)], not 30x30",
        ),
        ((1, 28, 28), [8, 8, 8], "NET with 3 blocks takes image sizes divisible by 8 .*, not 28x28"),
        ((3, 32, 36), [8, 8, 8], "not 32x36: set data.image_size to one of them or model.net.channels"),
        ((3, 6, 6), "auto", "NET takes images of at least 8x8, not 6x6"),
        ((3, 32, 32), [], "model.net.channels=.* must be auto or a list of integers"),
    ],
)
def test_sizes_a_net_cannot_halve_are_refused(name: str, shape, channels, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("NET", f"model/net={name}")) as err:
        NETS[name](image_shape=shape, channels=channels)
    assert "\n" not in str(err.value)


def reference_28x28(name: str, latent_dim: int, out_features: int) -> tuple[nn.Module, nn.Module]:
    """The 28x28 MLP ([128]) and conv nets as they were before nets took other shapes."""
    if name == "mlp":
        encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, out_features))
        decoder = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.ReLU(), nn.Linear(128, 784), nn.Unflatten(1, (1, 28, 28))
        )
        return encoder, decoder
    encoder = nn.Sequential(
        nn.Conv2d(1, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, out_features),
    )
    decoder = nn.Sequential(
        nn.Linear(latent_dim, 128),
        nn.ReLU(),
        nn.Linear(128, 64 * 7 * 7),
        nn.ReLU(),
        nn.Unflatten(1, (64, 7, 7)),
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),
    )
    return encoder, decoder


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_28x28_nets_are_unchanged(name: str) -> None:
    """Same modules, same init order: the same weights for the same seed, so MNIST runs do not move."""
    torch.manual_seed(7)
    old = reference_28x28(name, latent_dim=32, out_features=64)
    torch.manual_seed(7)
    nets = NETS[name](image_shape=(1, 28, 28), hidden_dims=[128])
    new = nets.encoder(64), nets.decoder(32, 1)
    for before, after in zip(old, new, strict=True):
        assert [type(m) for m in before] == [type(m) for m in after]
        old_state, new_state = before.state_dict(), after.state_dict()
        assert list(old_state) == list(new_state)
        assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)


def test_conv_yaml_defaults_to_auto_and_composes_every_net() -> None:
    for name, target in (("conv", "Conv"), ("resnet", "ResNet"), ("mlp", "MLP")):
        cfg = compose_config([f"model/net={name}"])
        assert cfg.model.net._target_.endswith(target)
    assert compose_config(["model/net=conv"]).model.net.channels == "auto"
    assert compose_config(["loss=logistic"]).loss.components == 1


@pytest.mark.parametrize("name", NETS)
def test_vae_with_the_logistic_likelihood_at_3x32x32(name: str) -> None:
    """The model asks the net for the likelihood's maps: 2C for the discretized logistic."""
    from hydra.utils import instantiate

    cfg = compose_config(
        ["model=vae", f"model/net={name}", "loss=logistic", "++model.image_shape=[3,32,32]", "latent_dim=8"]
    )
    torch.manual_seed(0)
    vae = instantiate(cfg.model, _convert_="all")
    assert isinstance(vae, VAE) and isinstance(vae.likelihood, DiscretizedLogistic)
    x = torch.randint(0, 256, (4, 3, 32, 32)) / 255
    assert vae.decode(torch.randn(4, 8)).shape == (4, 6, 32, 32)
    terms = vae.terms(x)
    assert all(v.shape == (4,) and torch.isfinite(v).all() for v in terms.values())
    terms["loss"].mean().backward()
    assert vae(x).shape == x.shape


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["model/net=conv"], None),
        (["model/net=conv", "model.net.channels=[16,32,64]"], None),
        (["model/net=resnet", "loss=logistic", "loss.components=5"], None),
        (["model/net=conv", "model.net.channels=wide"], "model.net.channels='wide' is not allowed"),
        (["model/net=conv", "model.net.channels=[]"], "model.net.channels=[] is not allowed"),
        (["model/net=resnet", "model.net.channels=[64,0]"], "model.net.channels=[64,0] is not allowed"),
        (["model/net=resnet", "model.net.blocks=-1"], "model.net.blocks=-1 is not allowed"),
        (["model/net=resnet", "model.net.residual_channels=0"], "model.net.residual_channels=0 is not"),
        (["loss=logistic", "loss.components=0"], "loss.components=0 is not allowed"),
    ],
)
def test_net_and_logistic_settings_are_checked_before_the_run(overrides: list[str], refused) -> None:
    from aevae.validation import validate

    cfg = compose_config(overrides)
    if refused is None:
        validate(cfg)
    else:
        with pytest.raises(UserError, match=re.escape(refused)):
            validate(cfg)
