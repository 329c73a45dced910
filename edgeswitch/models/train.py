"""Train an edge or cloud network with torch and export it to ONNX.

`NetClassifier` is the scikit-learn-style estimator: parameters in `__init__`, `fit` trains the
torch network and leaves an onnxruntime model in `model_`; every prediction after `fit` runs
through onnxruntime, exactly as it will in deployment.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeswitch.config import ModelConfig
from edgeswitch.data.clips import ClipBatch, input_bound
from edgeswitch.errors import DataError, NotFittedError
from edgeswitch.models.base import ModelOutput
from edgeswitch.models.onnx_model import META_PREFIX, OnnxClassifier


def count_macs(net, clip_shape: tuple[int, int]) -> int:
    """Multiply-accumulates of one clip through every Conv1d and Linear layer."""
    import torch

    total = 0

    def hook(module, _inp, out):
        nonlocal total
        if isinstance(module, torch.nn.Conv1d):
            k = module.kernel_size[0] * module.in_channels // module.groups
            total += int(out.shape[1] * out.shape[2] * k)
        elif isinstance(module, torch.nn.Linear):
            total += int(module.in_features * module.out_features)

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, torch.nn.Conv1d | torch.nn.Linear)]
    with torch.no_grad():
        net(torch.zeros(1, *clip_shape))
    for h in handles:
        h.remove()
    return total


def export_onnx(net, clip_shape: tuple[int, int], meta: dict) -> bytes:
    """Export `net` (returning logits, embedding) to an ONNX graph with softmax applied."""
    import onnx
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, clips):
            logits, emb = self.inner(clips)
            return torch.softmax(logits, dim=1), emb

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            WithSoftmax(net).eval(), (torch.zeros(1, *clip_shape),), buf, dynamo=False,
            input_names=["clips"], output_names=["proba", "embedding"],
            dynamic_axes={"clips": {0: "n"}, "proba": {0: "n"}, "embedding": {0: "n"}},
            opset_version=17,
        )
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key = META_PREFIX + key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    return proto.SerializeToString()


_MODEL = ModelConfig()  # the schema's [edge] / [cloud] table holds the defaults


@dataclass
class NetClassifier:
    """A torch network trained on labelled clips, served through ONNX Runtime after `fit`.

    arch: "edge-cnn" or "cloud-resnet" (see `edgeswitch.models.nets`); arch_params go to it.
    rotate_deg: random sensor-frame rotation used as augmentation (0 disables it).
    ensemble: how many networks (seeds `seed`, `seed + 1`, ...) are averaged into the model.
    """

    arch: str = _MODEL.arch
    arch_params: dict = field(default_factory=dict)
    name: str = "edge"
    epochs: int = _MODEL.epochs
    lr: float = _MODEL.lr
    batch_size: int = _MODEL.batch_size
    weight_decay: float = 1e-2
    rotate_deg: float = _MODEL.rotate_deg
    seed: int = 0
    threads: int = 1
    ensemble: int = _MODEL.ensemble  # networks averaged into one model (seeds seed, seed+1..)

    def fit(self, clips: ClipBatch, progress: bool = False) -> NetClassifier:
        """Train `ensemble` networks (seeds seed, seed+1, ...) and export them as one ONNX
        graph that averages their probabilities (and their embeddings)."""
        import torch

        from edgeswitch.models.nets import ARCHITECTURES, Ensemble

        y = clips.require_labels("training a model")
        if not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise DataError(f"{self.name}: ensemble must be an int >= 1, got {self.ensemble!r}")
        X = torch.from_numpy(clips.X)
        Y = torch.from_numpy(y)
        mean, std = X.mean(dim=(0, 1)), X.std(dim=(0, 1))
        bar = _progress(self.epochs * self.ensemble, f"train {self.name}", progress)
        nets = []
        for member in range(self.ensemble):
            torch.manual_seed(self.seed + member)
            net = ARCHITECTURES[self.arch](clips.clip_shape[1], clips.n_classes, mean, std,
                                           **self.arch_params)
            nets.append(self._train(net, X, Y, std, self.seed + member, bar))
        bar.close()
        net = nets[0] if len(nets) == 1 else Ensemble(nets).eval()
        meta = {
            "name": self.name, "classes": list(clips.classes), "clip_shape": list(clips.clip_shape),
            "macs": str(count_macs(net, clips.clip_shape)),
            "trainer": json.dumps(asdict(self)), "train_groups": sorted(set(clips.groups.tolist())),
            # the range the server checks clips against (data.clips.check_clip_range)
            "input_bound": repr(input_bound(clips.X)),
        }
        self.model_ = OnnxClassifier(export_onnx(net, clips.clip_shape, meta), threads=self.threads)
        self.classes_ = self.model_.classes_
        return self

    def _train(self, net, X, Y, std, seed: int, bar):
        """One network, AdamW with a one-cycle schedule, rotation / gain / noise augmentation."""
        import torch

        from edgeswitch.models.nets import random_rotation

        gen = torch.Generator().manual_seed(seed)
        steps = (len(X) + self.batch_size - 1) // self.batch_size
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr,
                                                    total_steps=self.epochs * steps)
        for _ in range(self.epochs):
            net.train()
            order = torch.randperm(len(X), generator=gen)
            for i in range(0, len(X), self.batch_size):
                idx = order[i : i + self.batch_size]
                if len(idx) < 2:  # batch norm needs two samples
                    continue
                xb = random_rotation(X[idx], self.rotate_deg, gen)
                # per-channel gain and sensor noise, in units of each channel's spread
                gain = 1 + 0.1 * torch.randn(len(idx), 1, xb.shape[2], generator=gen)
                xb = xb * gain + 0.05 * std * torch.randn(xb.shape, generator=gen)
                logits, _ = net(xb)
                loss = torch.nn.functional.cross_entropy(logits, Y[idx], label_smoothing=0.05)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            bar.update(1)
        return net.eval()

    def _model(self) -> OnnxClassifier:
        if not hasattr(self, "model_"):
            raise NotFittedError(f"{self.name}: call fit() before predicting")
        return self.model_

    @property
    def input_bound_(self) -> float:
        """The input range recorded in the exported model (see OnnxClassifier)."""
        return self._model().input_bound_

    def outputs(self, X: np.ndarray) -> ModelOutput:
        return self._model().outputs(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._model().predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._model().predict(X)

    def save(self, path: str | Path) -> Path:
        return self._model().save(path)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
