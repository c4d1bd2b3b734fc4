"""Conditional VAE (Sohn, Lee & Yan, 2015; the label-conditioned generative model M2 of Kingma,
Rezende, Mohamed & Welling, 2014, with the labels observed): encoder and decoder see the class."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from aevae.config import UserError
from aevae.models.vae import VAE


class LabelledNets:
    """The `model/net` pair of a CVAE: an encoder built for images with one more channel (the
    label's), `[B, C + 1, H, W] -> features`, and the decoder the net builds for the images."""

    def __init__(
        self, net: Callable[..., Any], image_shape: Sequence[int], hidden_dims: Sequence[int]
    ) -> None:
        c, h, w = (int(d) for d in image_shape)
        self.encoder_nets = net(image_shape=(c + 1, h, w), hidden_dims=hidden_dims)
        self.decoder_nets = net(image_shape=(c, h, w), hidden_dims=hidden_dims)


class CVAE(VAE):
    """q(z | x, y) = N(mu, diag(exp(log_var))), prior p(z) = N(0, I), decoder p(x | z, y); trains
    on the negative conditional ELBO per image,

        -ELBO(x | y) = E_q(z|x,y)[-log p(x | z, y)] + beta * KL(q(z | x, y) || N(0, I)),

    with everything the VAE offers (k draws, KL warm-up, free bits; `log_weights` bound log p(x | y)).

    As in PyTorch-VAE's CVAE, the encoder reads the label as one more image channel, a learned
    linear map of its one-hot `[B, num_classes] -> [B, 1, H, W]` concatenated to x; the decoder
    reads [z, one_hot(y)]. Labels are class ids `[B]`; `decode` also takes class weights
    `[B, num_classes]` (a path between two labels' one-hots, for interpolations).
    """

    conditional = True

    def __init__(self, latent_dim: int, net: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(latent_dim, functools.partial(LabelledNets, net), *args, **kwargs)

    def build(self, nets: LabelledNets, out_channels: int) -> None:
        _, h, w = self.image_shape
        self.encoder = nets.encoder_nets.encoder(self.latent_dim * self.code_factor)
        self.decoder = nets.decoder_nets.decoder(self.latent_dim + self.num_classes, out_channels)
        self.label_channel = nn.Linear(self.num_classes, h * w)

    def condition(self, y: Tensor | None) -> Tensor:
        """Labels as float rows `[B, num_classes]`: the one-hots of class ids `[B]`, or class
        weights `[B, num_classes]` as given."""
        if y is None:
            raise UserError(
                "model=cvae encodes and decodes given class labels: pass the images' labels "
                "(class ids, e.g. aevae.encode(model, x, labels=y))"
            )
        return y.to(torch.get_default_dtype()) if y.dim() == 2 else self.one_hot(y)

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        channel = self.label_channel(self.condition(y)).view(len(x), 1, *x.shape[2:])
        mu, log_var = self.encoder(torch.cat([x, channel.to(x.dtype)], dim=1)).chunk(2, dim=1)
        return mu, log_var

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(torch.cat([z, self.condition(y).to(z.dtype)], dim=1))
