"""`export-device`: a deployed bundle (edge.onnx, switcher.npz, router.json, operating point,
fusion) as one portable artifact: `device.onnx` (edge model + router + state update + fusion
in one graph), optionally `device.int8.onnx` (the edge quantized, the router float), and
`device.json` (what a runner needs to drive the graph: classes, clip shape, threshold and
controller, state shapes and initial state, identities, the cloud's protocol).

The artifact id is the SHA-256 of the float graph without the id itself (so it names the
edge, the router and every fitted number): the id is written into both graphs' metadata and
into device.json, and a runner refuses a state, a graph or a description of another artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgeswitch import __version__
from edgeswitch.device import spec as S
from edgeswitch.device.merge import device_model
from edgeswitch.device.routing import regimes, router_kind
from edgeswitch.errors import DataError, ModelError
from edgeswitch.models.base import model_identity
from edgeswitch.models.onnx_model import OnnxClassifier
from edgeswitch.switcher.calibrate import OperatingPoint
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.routers import Router, SwitcherRouter
from edgeswitch.switcher.stream import STATE_FEATURES, BeliefRouter


@dataclass
class Bundle:
    """What export reads from a bundle folder (pipeline.deploy.save_bundle)."""

    edge: OnnxClassifier
    router: Router
    operating_point: OperatingPoint
    fusion: Fusion | None


def read_bundle(folder: str | Path) -> Bundle:
    """The bundle's edge model, its router (router.json, else the switcher per clip),
    operating point and fusion; an error names a missing file or a part fitted for another
    edge model."""
    from edgeswitch.switcher import load_switcher

    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"bundle folder not found: {d}")
    for name in ("edge.onnx", "switcher.npz", "operating_point.json"):
        if not (d / name).is_file():
            raise DataError(f"bundle {d} lacks {name} (a bundle is what `demo` or "
                            "pipeline.deploy.save_bundle writes)")
    edge = OnnxClassifier(d / "edge.onnx")
    sw = load_switcher(d / "switcher.npz")
    sw.check_edge(edge)
    router: Router = BeliefRouter.load(d / "router.json", edge.classes_) \
        if (d / "router.json").is_file() else SwitcherRouter(sw)
    fusion = Fusion.load(d / "fusion.json") if (d / "fusion.json").is_file() else None
    return Bundle(edge, router, OperatingPoint.load(d / "operating_point.json"), fusion)


def embedding_dim(edge: OnnxClassifier) -> int:
    return int(edge.outputs(np.zeros((1, *edge.clip_shape_), np.float32)).embedding.shape[1])


def check_fits(router: Router, edge: OnnxClassifier) -> None:
    """A router's switcher must have been fitted on this edge's outputs: its class count and
    feature size (the embedding, plus the state's features for a stream switcher)."""
    sw = getattr(router, "switcher", None)
    if sw is None:
        return
    k, e = len(edge.classes_), embedding_dim(edge)
    extra = len(STATE_FEATURES) if isinstance(router, BeliefRouter) else 0
    got_k, got_e = getattr(sw, "n_classes_", None), getattr(sw, "embedding_dim_", None)
    if got_k != k or got_e != e + extra:
        raise ModelError(f"router '{router.name}': its switcher was fitted on {got_k} classes "
                         f"and an embedding of {got_e}, edge model '{edge.name}' gives {k} "
                         f"classes and {e + extra} (a switcher of another edge model)")
    sw.check_edge(edge)


def check_operating_point(router: Router, op: OperatingPoint) -> None:
    """A threshold means something only for the router it was calibrated for (as
    cli.common.check_router_op says for `classify`)."""
    made_for = op.params.get("router")
    if router.stateful and made_for not in (None, router.name):
        raise DataError(f"the operating point was calibrated for router {made_for!r}, the "
                        f"artifact routes with {router.name!r}")
    if not router.stateful and made_for == "belief":
        raise DataError("the operating point was calibrated for the belief router, the "
                        f"artifact routes with {router.name!r} per clip")


def _with_meta(model: onnx.ModelProto, meta: dict[str, str]) -> onnx.ModelProto:
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def export_device(bundle: str | Path | Bundle, out: str | Path, *, router: Router | None = None,
                  operating_point: OperatingPoint | None = None, int8: bool = False,
                  sample_rate_hz: float | None = None, channels: list[str] | None = None
                  ) -> dict:
    """Write the artifact to folder `out`; returns device.json's content. `router` /
    `operating_point` replace the bundle's (e.g. a stream switcher fitted beside it, or a
    confidence baseline with its own threshold); `sample_rate_hz` and `channels` (names, e.g.
    ax, ay, az, wx, wy, wz) describe the clips for a device that cuts its own."""
    b = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
    if channels is not None and len(channels) != b.edge.clip_shape_[1]:
        raise DataError(f"{len(channels)} channel names for clips of "
                        f"{b.edge.clip_shape_[1]} channels")
    router = router or b.router
    op = operating_point or b.operating_point
    check_operating_point(router, op)
    kind, family = router_kind(router)
    check_fits(router, b.edge)
    k, j = len(b.edge.classes_), regimes(router)
    weight = 0.0 if b.fusion is None else float(b.fusion.weight)
    if isinstance(router, BeliefRouter) and router.answers == "belief" and \
            router.fusion_weight is not None and b.fusion is not None and \
            abs(router.fusion_weight - weight) > 1e-12:
        raise DataError(f"router.json was fitted with fusion weight {router.fusion_weight}, "
                        f"fusion.json has {weight}")
    edge_proto = onnx.load_from_string(b.edge.onnx_bytes_)
    model = device_model(edge_proto, router, weight, b.edge.clip_shape_, k, j)
    artifact_id = S.sha256(model.SerializeToString())[:16]
    meta = {S.META_ARTIFACT: artifact_id, "edgeswitch.format_version": str(S.FORMAT_VERSION)}
    graphs = {"float": _with_meta(model, meta)}
    if int8:
        from edgeswitch.device.quantize import quantize_edge

        quantized = device_model(quantize_edge(edge_proto), router, weight,
                                 b.edge.clip_shape_, k, j)
        graphs["int8"] = _with_meta(quantized, meta)
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    for variant, m in graphs.items():
        data = m.SerializeToString()
        (d / S.GRAPH_FILES[variant]).write_bytes(data)
        files[variant] = {"file": S.GRAPH_FILES[variant], "bytes": len(data),
                          "sha256": S.sha256(data)}
    if not int8:
        (d / S.GRAPH_FILES["int8"]).unlink(missing_ok=True)  # a stale one would not match
    desc = describe(b, router, op, kind, family, weight, j, artifact_id, files,
                    sample_rate_hz, channels)
    import json

    (d / S.SPEC_FILE).write_text(json.dumps(desc, indent=1))
    return desc


def describe(b: Bundle, router: Router, op: OperatingPoint, kind: str, family: str | None,
             weight: float, j: int, artifact_id: str, files: dict,
             sample_rate_hz: float | None, channels: list[str] | None = None) -> dict:
    """device.json's content: every field a runner or a page needs, most self-describing
    (`rule`, `meaning`, `loop`); the graph's I/O names are device.spec's."""
    k = len(b.edge.classes_)
    params = router.to_dict(tuple(b.edge.classes_)) if isinstance(router, BeliefRouter) \
        else {"router": router.name}
    params.pop("meta", None)
    return {
        "format": S.FORMAT, "format_version": S.FORMAT_VERSION, "artifact_id": artifact_id,
        "created_by": f"edgeswitch {__version__}",
        "ids": {"artifact_id": artifact_id, "edge_model": model_identity(b.edge),
                "edge_sha256": S.sha256(b.edge.onnx_bytes_)},
        "classes": list(b.edge.classes_),
        "clip_shape": list(b.edge.clip_shape_), "sample_rate_hz": sample_rate_hz,
        "channels": channels, "input_bound": b.edge.input_bound_,
        "clip": "float32 [n, T, C]: T samples of C channels in the sensor's units (the graph "
                "normalises)",
        "router": {"name": router.name, "kind": kind, "family": family,
                   "stateful": bool(router.stateful), "params": params},
        "threshold": S.json_number(op.threshold),
        "operating_point": operating_point(op),
        "fusion": {"edge_weight": weight, "method": None if b.fusion is None else
                   b.fusion.method, "rule": "an answered offload: p_cloud * p_edge ** weight, "
                   "normalised (weight 0: the cloud's own)"},
        "state": {"J": j, "K": k, "never": S.NEVER,
                  "meaning": "belief: log-probabilities over (regime, class) (one dummy row "
                             "for a per-clip router); age: clips since the cloud last answered "
                             "(never: 1e9); last: the class of that answer (-1: none)"},
        "initial_state": {"belief": np.full((1, j, k), -np.log(j * k)).tolist(),
                          "age": S.NEVER, "last": -1.0},
        "graphs": files,
        "inputs": [{"name": n, "dtype": t, "shape": s} for n, t, s in S.INPUTS],
        "outputs": [{"name": n, "dtype": t, "shape": s} for n, t, s in S.OUTPUTS],
        "loop": S.LOOP, "late_answers": S.LATE, "cloud": S.CLOUD,
    }


def operating_point(op: OperatingPoint) -> dict:
    """The threshold's rule, and an adaptive point's controller: target `rate`, `step`, and
    the calibration quantiles with the knots / levels RateController interpolates between."""
    out = {"mode": op.mode, "threshold": S.json_number(op.threshold),
           "rule": "offload when trust < threshold - tie_tolerance (float32 cannot settle a "
                   "tie: a trust within it of the threshold counts as equal, and is kept)",
           "tie_tolerance": S.TIE, "adaptive": bool(op.adaptive),
           "calib_offload_rate": op.calib_offload_rate, "certified": op.certified}
    if op.adaptive:
        from edgeswitch.device.controller import Controller

        c = Controller(op.params["rate"], op.params["calib_quantiles"],
                       op.params.get("step", 0.01))
        out |= {"rate": c.rate, "step": c.step,
                "calib_quantiles": list(op.params["calib_quantiles"]),
                "knots": c.knots.tolist(), "levels": c.levels.tolist(),
                "controller": "offload when the trust's rank among the calibration quantiles "
                              "(linear between knots and levels; a trust within tie_tolerance "
                              "of a knot takes its level) < level; level starts at rate "
                              "and moves by step * (rate - offloaded) after each clip the cap "
                              "did not refuse; the cap: offloaded + 1 > rate * seen refuses"}
    return out
