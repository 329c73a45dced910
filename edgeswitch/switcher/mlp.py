"""The DMD switcher of the paper: a small MLP that predicts whether the cloud would agree.

Trained with torch (a few seconds), served with two numpy matrix products, so it costs almost
nothing next to the edge model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.switcher.base import Switcher, register_family, sigmoid


@register_family("mlp")
@dataclass
class MLPSwitcher(Switcher):
    """One hidden ReLU layer, sigmoid output, trained on soft or hard targets by BCE.

    The number of epochs is chosen by cross-validation over groups (subjects/recordings) when
    there are at least two, so early stopping rewards generalising to an unseen subject rather
    than to unseen windows of known ones; then the MLP is refitted on all."""

    hidden: int = 32
    epochs: int = 400
    lr: float = 1e-2
    weight_decay: float = 1e-3
    val_fraction: float = 0.2

    _arrays: ClassVar[tuple[str, ...]] = ("W1_", "b1_", "w2_", "b2_")

    def _fit(self, F: np.ndarray, t: np.ndarray, groups: np.ndarray | None) -> None:
        if self.epochs < 1 or self.hidden < 1:
            raise DataError(f"switcher epochs and hidden must be >= 1, got {self.epochs}, "
                            f"{self.hidden}")
        mean = F.mean(axis=0)
        scale = F.std(axis=0) + 1e-6
        Z = ((F - mean) / scale).astype(np.float32)
        folds = validation_folds(len(F), groups, self.val_fraction,
                                 np.random.default_rng(self.seed))
        if folds:
            curves = [self._train(Z[~va], t[~va], self.epochs, Z[va], t[va])[1] for va in folds]
            mean_curve = np.mean(curves, axis=0)
            self.best_epoch_ = int(np.argmin(mean_curve)) + 1
            self.val_loss_ = float(mean_curve.min())
        else:
            self.best_epoch_, self.val_loss_ = self.epochs, None
        (w1, b1, w2, b2), _ = self._train(Z, t, self.best_epoch_)
        # fold the standardisation into the first layer: inference is then two matmuls
        self.W1_ = (w1 / scale).T.astype(np.float32)
        self.b1_ = (b1 - (w1 / scale) @ mean).astype(np.float32)
        self.w2_ = w2.reshape(-1).astype(np.float32)
        self.b2_ = np.float32(b2[0])

    def _train(self, Z: np.ndarray, t: np.ndarray, epochs: int, Zv: np.ndarray | None = None,
               tv: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Full-batch AdamW (the pool is small); returns weights and the per-epoch val loss."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: more threads only add synchronisation
        try:
            return self._train_torch(torch, Z, t, epochs, Zv, tv)
        finally:
            torch.set_num_threads(threads)

    def _train_torch(self, torch, Z, t, epochs, Zv, tv):
        """Full-batch AdamW on BCE, written out op by op: the same ATen calls, in the same
        order, as `nn.Sequential` + autograd + `torch.optim.AdamW` (bit-identical weights and
        losses; tests/test_switcher.py holds it to the reference loop), without their per-step
        Python overhead, which was a third or more of an epoch on a benchmark's pools."""
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        torch.manual_seed(self.seed)
        net = torch.nn.Sequential(torch.nn.Linear(Z.shape[1], self.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(self.hidden, 1))   # the seeded initialisation
        params = [p.detach() for p in net.parameters()]   # W1, b1, w2, b2
        adam = _AdamW(torch, params, self.lr, self.weight_decay)
        X, T = torch.from_numpy(Z), torch.from_numpy(t)
        Xv = None if Zv is None else torch.from_numpy(Zv)
        Tv = None if tv is None else torch.from_numpy(tv)
        val = []
        with torch.no_grad():
            for _ in range(epochs):
                adam.step(_grads(torch, params, X, T))
                if Xv is not None:
                    val.append(bce(_forward(torch, params, Xv)[1], Tv).item())
        weights = [p.numpy().astype(np.float32) for p in params]
        return weights, np.asarray(val)

    def _trust(self, F: np.ndarray) -> np.ndarray:
        h = np.maximum(F @ self.W1_ + self.b1_, 0.0)
        return sigmoid(h @ self.w2_ + float(self.b2_))

    def _restore(self, fitted: dict | None) -> None:
        super()._restore(fitted)
        if fitted is None:  # a file from before families: only the weights are known
            self.n_features_, self.n_classes_, self.embedding_dim_ = self.W1_.shape[0], 0, 0

    @property
    def macs(self) -> int:
        """Multiply-accumulates per clip of the MLP and its features."""
        self._check_fitted()
        return int(self.W1_.size + self.w2_.size) + self.feature_macs()


def _forward(torch, params, X):
    """Hidden activations and logits, as `nn.Linear` computes them (addmm with the bias)."""
    w1, b1, w2, b2 = params
    h = torch.relu(torch.addmm(b1, X, w1.t()))
    return h, torch.addmm(b2, h, w2.t()).squeeze(1)


def _grads(torch, params, X, T) -> list:
    """The gradients of the mean BCE-with-logits loss that autograd computes, op for op:
    (sigmoid(z) - t) / n for the logits (autograd also multiplies by the incoming 1, an
    identity); for each layer the weight's gradient as
    addmm's backward takes it for a transposed (column-major) weight, grad^T @ input, and the
    bias's as the sum over rows that broadcasting back to its shape takes."""
    w1, _, w2, _ = params
    h, z = _forward(torch, params, X)
    g2 = (z.sigmoid() - T).div_(z.numel()).unsqueeze(1)
    g1 = torch.ops.aten.threshold_backward(g2.mm(w2), h, 0)   # relu's backward
    return [g1.t().mm(X), g1.sum([0], keepdim=True).view([w1.shape[0]]),
            g2.t().mm(h), g2.sum([0], keepdim=True).view([1])]


class _AdamW:
    """`torch.optim.AdamW`'s single-tensor update (defaults: betas 0.9, 0.999, eps 1e-8, no
    amsgrad), op for op, on plain tensors."""

    def __init__(self, torch, params: list, lr: float, weight_decay: float) -> None:
        self.params, self.lr, self.wd = params, lr, weight_decay
        self.beta1, self.beta2, self.eps = 0.9, 0.999, 1e-8
        self.m = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.v = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.t = 0.0

    def step(self, grads: list) -> None:
        self.t += 1.0
        step_size = self.lr / (1 - self.beta1 ** self.t)
        bias2_sqrt = (1 - self.beta2 ** self.t) ** 0.5
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            p.mul_(1 - self.lr * self.wd)
            m.lerp_(g, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            p.addcdiv_(m, (v.sqrt() / bias2_sqrt).add_(self.eps), value=-step_size)


def validation_folds(n: int, groups: np.ndarray | None, fraction: float,
                     rng: np.random.Generator, max_folds: int = 5) -> list[np.ndarray]:
    """Validation masks: leave-group(s)-out folds when there are >= 2 groups, else one random
    `fraction` of the rows; none when there is too little data."""
    if fraction <= 0 or n < 10:
        return []
    if groups is not None:
        g = rng.permutation(np.unique(groups))
        if len(g) >= 2:
            return [np.isin(groups, part) for part in np.array_split(g, min(max_folds, len(g)))]
    return [rng.random(n) < fraction]
