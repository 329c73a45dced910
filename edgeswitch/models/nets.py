"""Torch architectures for the edge and cloud models. Imported only when a model is trained.

Both networks take raw clips `[n, T, C]` (channels last, sensor units), normalise them with
statistics stored in the network, and return `(logits, embedding)`: the embedding is the
penultimate feature vector the switcher may read.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _Normalise(nn.Module):
    """Pick channels, decimate in time, standardise: part of the exported graph, so the ONNX
    model takes the same raw clips as every other model."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, channels: list[int],
                 decimate: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean[channels].reshape(1, -1, 1).clone())
        self.register_buffer("std", std[channels].clamp_min(1e-6).reshape(1, -1, 1).clone())
        self.register_buffer("channels", torch.tensor(channels, dtype=torch.long))
        self.decimate = decimate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2).index_select(1, self.channels)[:, :, :: self.decimate]
        return (x - self.mean) / self.std


class EdgeNet(nn.Module):
    """A small strided 1-D CNN: a handful of conv layers, global average pooling, a linear head.

    `channels` and `decimate` model a low-power device (e.g. accelerometer only, half rate).
    """

    def __init__(self, n_channels: int, n_classes: int, mean: torch.Tensor, std: torch.Tensor,
                 width: int = 32, layers: int = 3, channels: list[int] | None = None,
                 decimate: int = 1) -> None:
        super().__init__()
        channels = list(range(n_channels)) if channels is None else list(channels)
        self.prep = _Normalise(mean, std, channels, decimate)
        mods: list[nn.Module] = []
        c_in = len(channels)
        for i in range(layers):
            mods += [nn.Conv1d(c_in, width, 5, stride=1 if i == 0 else 2, padding=2),
                     nn.BatchNorm1d(width), nn.ReLU()]
            c_in = width
        self.features = nn.Sequential(*mods, nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.features(self.prep(x))
        return self.head(emb), emb


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, 7, padding=3), nn.BatchNorm1d(c_out), nn.ReLU(),
            nn.Conv1d(c_out, c_out, 5, padding=2), nn.BatchNorm1d(c_out), nn.ReLU(),
            nn.Conv1d(c_out, c_out, 3, padding=1), nn.BatchNorm1d(c_out),
        )
        self.skip = nn.Sequential(nn.Conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class CloudNet(nn.Module):
    """A full-rate 1-D ResNet (Wang et al. 2017's time-series ResNet) on every channel."""

    def __init__(self, n_channels: int, n_classes: int, mean: torch.Tensor, std: torch.Tensor,
                 width: int = 64, channels: list[int] | None = None) -> None:
        super().__init__()
        channels = list(range(n_channels)) if channels is None else list(channels)
        self.prep = _Normalise(mean, std, channels, 1)
        self.features = nn.Sequential(
            _ResBlock(len(channels), width), _ResBlock(width, 2 * width),
            _ResBlock(2 * width, 2 * width), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.features(self.prep(x))
        return self.head(emb), emb


class Ensemble(nn.Module):
    """Several trained networks as one: returns the log of their mean probability (so that the
    exported softmax gives the mean) and their mean embedding."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [net(x) for net in self.nets]
        proba = torch.stack([torch.softmax(logits, dim=1) for logits, _ in outs]).mean(dim=0)
        emb = torch.stack([e for _, e in outs]).mean(dim=0)
        return torch.log(proba.clamp_min(1e-12)), emb


ARCHITECTURES = {"edge-cnn": EdgeNet, "cloud-resnet": CloudNet}


def random_rotation(x: torch.Tensor, max_deg: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each clip's xyz channel triplets by one random rotation (Rodrigues' formula).

    A watch sits differently on every wrist; rotating the sensor frame is the augmentation that
    makes a model generalise to unseen subjects. x is `[n, T, C]` with C a multiple of 3.
    """
    n, _, c = x.shape
    if max_deg <= 0 or c % 3:
        return x
    axis = torch.randn(n, 3, generator=gen)
    axis = axis / axis.norm(dim=1, keepdim=True)
    theta = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(max_deg)
    k = torch.zeros(n, 3, 3)
    k[:, 0, 1], k[:, 0, 2] = -axis[:, 2], axis[:, 1]
    k[:, 1, 0], k[:, 1, 2] = axis[:, 2], -axis[:, 0]
    k[:, 2, 0], k[:, 2, 1] = -axis[:, 1], axis[:, 0]
    rot = torch.eye(3) + torch.sin(theta)[:, None, None] * k \
        + (1 - torch.cos(theta))[:, None, None] * (k @ k)
    parts = [x[:, :, i : i + 3] @ rot.transpose(1, 2) for i in range(0, c, 3)]
    return torch.cat(parts, dim=2)
