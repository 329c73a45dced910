"""Synthetic edge outputs shared by the switcher tests."""

import numpy as np

from edgeswitch.models.base import ModelOutput


def edge_outputs(n=800, k=4, seed=0):
    """Edge outputs whose embedding's first coordinate decides agreement, and 8 groups."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(k), n).astype(np.float32)
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    agree = (emb[:, 0] > 0).astype(np.float32)
    return ModelOutput(proba=proba, embedding=emb), agree, np.repeat(np.arange(8), n // 8)
