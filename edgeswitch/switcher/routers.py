"""Routers: one scoring method each, a registry by name.

`trust(edge_output)` returns, per clip, how much to trust the edge answer; the hybrid offloads
clips whose score falls below a threshold. Confidence baselines follow Sedna / BranchyNet;
`dmd` and `supervised` are learned (any `Switcher` family); `oracle` knows the truth and marks the
physical limit of routing for a model pair.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.base import Switcher, registrar
from edgeswitch.switcher.features import confidence

ROUTERS: dict[str, Callable[..., Router]] = {}
register = registrar(ROUTERS, "name")


def make_router(name: str, **kwargs) -> Router:
    if name not in ROUTERS:
        raise DataError(f"unknown router '{name}'; known: {sorted(ROUTERS)}")
    try:
        return ROUTERS[name](**kwargs)
    except TypeError as exc:  # e.g. "switcher" needs a fitted switcher, "oracle" the truth
        raise DataError(f"router '{name}' cannot be built from {sorted(kwargs)}: {exc}") from None


class Router(ABC):
    name: str = "router"

    @abstractmethod
    def trust(self, edge: ModelOutput) -> np.ndarray:
        """Trust in the edge answer per clip; lower scores are offloaded first."""


@register("max_prob")
class MaxProbRouter(Router):
    def trust(self, edge: ModelOutput) -> np.ndarray:
        return confidence(edge.proba)[:, 0]


@register("margin")
class MarginRouter(Router):
    def trust(self, edge: ModelOutput) -> np.ndarray:
        return confidence(edge.proba)[:, 1]


@register("entropy")
class EntropyRouter(Router):
    def trust(self, edge: ModelOutput) -> np.ndarray:
        return 1.0 - confidence(edge.proba)[:, 2]


@register("random")
class RandomRouter(Router):
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)  # one stream: successive batches differ

    def trust(self, edge: ModelOutput) -> np.ndarray:
        return self.rng.random(len(edge))


@register("switcher")
class SwitcherRouter(Router):
    """A fitted `Switcher` (DMD-trained, or the supervised ablation)."""

    def __init__(self, switcher: Switcher) -> None:
        self.switcher = switcher
        self.name = switcher.name

    def trust(self, edge: ModelOutput) -> np.ndarray:
        return self.switcher.trust(edge)


@register("oracle")
class OracleRouter(Router):
    """Knows, for a fixed set of clips, whether each model is right.

    Offloads first where the edge is wrong and the cloud right (score 0), then where it makes
    no difference (0.5), last where offloading would break a right edge answer (1).
    """

    def __init__(self, cloud_label: np.ndarray, y_true: np.ndarray) -> None:
        self.cloud_label = np.asarray(cloud_label)
        self.y_true = np.asarray(y_true)

    def trust(self, edge: ModelOutput) -> np.ndarray:
        if len(edge) != len(self.y_true):
            raise DataError(f"oracle built for {len(self.y_true)} clips, got {len(edge)}")
        return oracle_scores(edge.label, self.cloud_label, self.y_true)


def oracle_scores(edge_label: np.ndarray, cloud_label: np.ndarray, y: np.ndarray) -> np.ndarray:
    edge_ok, cloud_ok = edge_label == y, cloud_label == y
    return np.where(~edge_ok & cloud_ok, 0.0, np.where(edge_ok & ~cloud_ok, 1.0, 0.5))
