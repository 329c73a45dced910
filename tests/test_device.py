"""The device artifact (edgeswitch.device): one ONNX graph run by onnxruntime gives the Python
runtime's decisions and answers, clip by clip, for every router it can hold; bad inputs,
states and bundles are refused by name; the runner imports nothing beyond a slim install.

Fast tests use a tiny edge and cloud written with onnx.helper; the slow ones a watch bundle
(few epochs: the decisions, not the accuracy, are under test) and one test subject's clips.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeswitch.errors import DataError, ModelError

T, C, K, E = 8, 3, 4, 5
CLASSES = ("a", "b", "c", "d")


# -- a tiny edge and cloud, no torch ------------------------------------------------------
def tiny_model(seed: int, name: str) -> bytes:
    """clips [n, T, C] -> proba [n, K] (softmax of the time-mean times W), embedding [n, E]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 2, (C, K)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, 1, (C, E)).astype(np.float32), "V")]
    nodes = [helper.make_node("ReduceMean", ["clips"], ["m"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["m", "W"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["proba"], axis=1),
             helper.make_node("MatMul", ["m", "V"], ["e"]),
             helper.make_node("Tanh", ["e"], ["embedding"])]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("clips", TensorProto.FLOAT, ["n", T, C])],
        [helper.make_tensor_value_info("proba", TensorProto.FLOAT, ["n", K]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", E])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in {"name": name, "classes": json.dumps(CLASSES),
                       "clip_shape": json.dumps([T, C])}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"edgeswitch.{key}", value
    return model.SerializeToString()


def tiny_stream(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clips of three streams whose mean holds for a while, then moves (a stream router has
    something to carry)."""
    rng = np.random.default_rng(seed)
    centre = np.repeat(rng.normal(0, 1, (n // 10 + 1, 1, C)), 10, axis=0)[:n]
    X = (centre + rng.normal(0, 0.7, (n, T, C))).astype(np.float32)
    return X, np.array([f"s{i % 3}" for i in range(n)])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny bundle folder and its parts: edge, cloud, switchers fitted on their outputs."""
    from edgeswitch.models import ModelOutput, OnnxClassifier
    from edgeswitch.switcher import Fusion, LinearSwitcher, calibrate_offload

    d = tmp_path_factory.mktemp("tiny")
    edge, cloud = OnnxClassifier(tiny_model(1, "edge")), OnnxClassifier(tiny_model(2, "cloud"))
    edge.save(d / "edge.onnx")
    X, _ = tiny_stream(400, seed=5)
    out = edge.outputs(X)
    agree = (out.label == cloud.predict(X)).astype(np.float32)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sw = LinearSwitcher(l2=1e-3).fit(out, agree)
        stream_sw = LinearSwitcher(l2=1e-3).fit(
            ModelOutput(out.proba, np.hstack([out.embedding, rng.random((len(X), 8))])), agree)
    sw.save(d / "switcher.npz")
    op = calibrate_offload(sw.trust(out), 0.3)
    op.save(d / "operating_point.json")
    fusion = Fusion("fixed", edge_weight=0.5).fit(out.proba, out.proba)
    fusion.save(d / "fusion.json")
    return {"dir": d, "edge": edge, "cloud": cloud, "switcher": sw, "stream_switcher": stream_sw,
            "op": op, "fusion": fusion, "scores": sw.trust(out)}


def python_runtime(edge, router, cloud, op, fusion, X, streams):
    """The reference: HybridClassifier with the cloud in process, one clip per call, under the
    graph's documented rule for a fixed threshold: offload when trust < threshold - TIE (a
    float32 trust cannot settle a float64 tie, device.spec.TIE). Without it a clip whose trust
    lies within TIE below the threshold (one in 519 of a fresh watch run's margins) is
    offloaded here and kept by the graph, by design."""
    from dataclasses import replace

    from edgeswitch.cloud.client import InProcessCloud
    from edgeswitch.device.spec import TIE
    from edgeswitch.runtime.hybrid import HybridClassifier

    if not op.adaptive:
        op = replace(op, threshold=op.threshold - TIE)
    h = HybridClassifier(edge, router, InProcessCloud(cloud), op, fusion=fusion)
    rows = [h.classify(X[i:i + 1], streams=[streams[i]]) for i in range(len(X))]
    return (np.array([r.offloaded[0] for r in rows]), np.stack([r.proba[0] for r in rows]),
            np.array([r.score[0] for r in rows]), [r.cloud_age[0] for r in rows])


def device_runtime(folder, cloud, X, streams, variant="float"):
    from edgeswitch.device.runner import DeviceRunner

    r = DeviceRunner(folder, variant=variant, cloud=cloud)
    rows = [r.classify_clip(X[i], streams[i], str(i)) for i in range(len(X))]
    proba = np.array([[row["proba"][c] for c in r.classes] for row in rows])
    return (np.array([row["offloaded"] for row in rows]), proba,
            np.array([row["switcher_score"] for row in rows]),
            [row["cloud_age"] for row in rows], rows)


def assert_parity(ref, dev, classes) -> None:
    """Same offloads and labels, probabilities within 1e-5 (the device rows round to 1e-6),
    trust within 1e-5, the same cloud age before each clip."""
    off, proba, score, age = ref
    d_off, d_proba, d_score, d_age, rows = dev
    assert 0 < off.sum() < len(off), "the case must offload some clips, not all"
    np.testing.assert_array_equal(d_off, off)
    np.testing.assert_array_equal(d_proba.argmax(axis=1), proba.argmax(axis=1))
    np.testing.assert_allclose(d_proba, proba, atol=1e-5)
    np.testing.assert_allclose(d_score, score, atol=1e-5)
    assert d_age == [None if not np.isfinite(a) else int(a) for a in age]
    assert [r["label"] for r in rows] == [classes[k] for k in proba.argmax(axis=1)]
    assert [r["answered_by"] for r in rows] == ["cloud" if o else "edge" for o in off]


def tiny_routers(t):
    from edgeswitch.switcher.routers import make_router
    from edgeswitch.switcher.stream import BeliefRouter, BeliefSwitcherRouter

    belief = dict(switch=(0.1, 1.0), edge_weight=0.5, cloud_weight=2.0, fusion_weight=0.5)
    return {"switcher": make_router("switcher", switcher=t["switcher"]),
            "margin": make_router("margin"),
            "belief": BeliefRouter(**belief, alarm=(0,)),
            "belief-fusion": BeliefRouter(**belief, answers="fusion"),
            "belief-switcher": BeliefSwitcherRouter(**belief, switcher=t["stream_switcher"])}


@pytest.mark.parametrize("name", ["switcher", "margin", "belief", "belief-fusion",
                                  "belief-switcher"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_tiny_device_graph_decides_and_answers_as_the_python_runtime(tiny, tmp_path, name,
                                                                     adaptive):
    from edgeswitch.device.export import export_device, read_bundle
    from edgeswitch.models.base import ModelOutput
    from edgeswitch.switcher import calibrate_offload

    t = tiny
    router = tiny_routers(t)[name]
    X, streams = tiny_stream()
    # a threshold offloading about 30% of other clips' first-step trust (calibrated on the
    # clips themselves, one clip's trust would be the threshold: a tie float32 cannot settle)
    edge_out = t["edge"].outputs(tiny_stream(seed=1)[0])
    trust = np.concatenate([router.step(router.start(1, K), ModelOutput(
        edge_out.proba[i:i + 1], edge_out.embedding[i:i + 1])).trust
        for i in range(len(edge_out))])
    op = calibrate_offload(trust, 0.3, adaptive=adaptive)
    export_device(read_bundle(t["dir"]), tmp_path, router=router, operating_point=op)
    ref = python_runtime(t["edge"], router, t["cloud"], op, t["fusion"], X, streams)
    assert_parity(ref, device_runtime(tmp_path, t["cloud"], X, streams), CLASSES)


def test_the_bundle_exports_as_its_switcher_per_clip_and_the_cli_writes_it(tiny, tmp_path,
                                                                          capsys):
    from edgeswitch.cli.main import main
    from edgeswitch.switcher.routers import SwitcherRouter

    t = tiny
    assert main(["export-device", str(t["dir"]), "--out", str(tmp_path), "--int8",
                 "--sample-rate", "50", "--channels", "ax,ay,az"]) == 0
    assert "wrote device.onnx" in capsys.readouterr().out
    spec = json.loads((tmp_path / "device.json").read_text())
    assert spec["router"]["kind"] == "switcher" and spec["router"]["family"] == "linear"
    assert spec["clip_shape"] == [T, C] and spec["sample_rate_hz"] == 50
    assert spec["channels"] == ["ax", "ay", "az"] and spec["classes"] == list(CLASSES)
    assert spec["state"]["J"] == 1 and spec["state"]["K"] == K
    assert spec["threshold"] == pytest.approx(t["op"].threshold)
    assert set(spec["graphs"]) == {"float", "int8"}
    assert [i["name"] for i in spec["inputs"]] == ["clip", "belief", "age", "last",
                                                   "cloud_proba", "cloud_mask", "threshold"]
    X, streams = tiny_stream()
    ref = python_runtime(t["edge"], SwitcherRouter(t["switcher"]), t["cloud"], t["op"],
                         t["fusion"], X, streams)
    assert_parity(ref, device_runtime(tmp_path, t["cloud"], X, streams), CLASSES)
    # the int8 graph: the edge's weights quantized, the router's ops all float
    m = onnx.load(tmp_path / "device.int8.onnx")
    ops = {n.op_type for n in m.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert not [n for n in m.graph.node if n.name.startswith("router/")
                and ("Integer" in n.op_type or "Quantize" in n.op_type)]
    rows = device_runtime(tmp_path, t["cloud"], X, streams, variant="int8")[4]
    assert len(rows) == len(X)


def test_the_graph_takes_a_batch_of_streams_at_once(tiny, tmp_path):
    """n is dynamic: one call routes several streams' clips, each row as alone."""
    import onnxruntime as ort

    from edgeswitch.device.export import export_device, read_bundle

    router = tiny_routers(tiny)["belief-switcher"]
    export_device(read_bundle(tiny["dir"]), tmp_path, router=router)
    s = ort.InferenceSession(str(tmp_path / "device.onnx"), providers=["CPUExecutionProvider"])
    X, _ = tiny_stream(6)
    rng = np.random.default_rng(1)
    feed = {"clip": X, "belief": np.log(rng.dirichlet(np.ones(2 * K), 6)).reshape(6, 2, K)
            .astype(np.float32), "age": np.array([0, 1, 5, 1e9, 2, 3], np.float32),
            "last": np.array([0, 1, -1, -1, 3, 2], np.float32),
            "cloud_proba": rng.dirichlet(np.ones(K), 6).astype(np.float32),
            "cloud_mask": np.array([0, 1, 0, 1, 1, 0], np.float32),
            "threshold": np.array([0.5], np.float32)}
    batch = s.run(None, feed)
    for i in range(6):
        one = s.run(None, {k: (v if k == "threshold" else v[i:i + 1]) for k, v in feed.items()})
        for b, o in zip(batch, one, strict=True):
            np.testing.assert_allclose(b[i:i + 1], o, atol=1e-6)


def test_the_runners_controller_decides_as_the_rate_controller():
    from edgeswitch.device.controller import Controller
    from edgeswitch.switcher.calibrate import RateController

    rng = np.random.default_rng(0)
    calib = np.round(rng.random(300), 2)            # ties among the knots
    q = np.quantile(calib, np.linspace(0, 1, 201))
    scores = np.concatenate([rng.random(500) * 0.8, np.round(rng.random(200), 2)])
    ref = RateController(0.25, q, 0.02).decide(scores)
    c = Controller(0.25, q, 0.02)
    assert [c.decide(float(s)) for s in scores] == ref.tolist()
    # a trust tied with calibration knots (a tree's few values), as float32 sees it
    tied = rng.choice(np.unique(q), 700)
    ref = RateController(0.25, q, 0.02).decide(tied)
    c = Controller(0.25, q, 0.02, tie=1e-6)
    assert [c.decide(float(np.float32(s))) for s in tied] == ref.tolist()


# -- refusals --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(tiny, tmp_path_factory):
    from edgeswitch.device.export import export_device, read_bundle

    d = tmp_path_factory.mktemp("artifact")
    export_device(read_bundle(tiny["dir"]), d, router=tiny_routers(tiny)["belief"],
                  operating_point=tiny["op"])
    return d


@pytest.mark.parametrize("clip, says", [
    (np.zeros((T + 1, C), np.float32), "takes one clip [8, 3]"),
    (np.zeros((2, T, C), np.float32), "takes one clip"),
    (np.zeros(T * C, np.float32), "3 dims"),
    (np.full((T, C), "x"), "real numeric dtype"),
    (np.where(np.eye(T, C) > 0, np.nan, 0.0), "NaN"),
    (np.full((T, C), 1e30), "input range"),
])
def test_a_bad_clip_is_refused_by_name(artifact, clip, says):
    from edgeswitch.device.runner import DeviceRunner

    r = DeviceRunner(artifact)
    with pytest.raises(DataError, match=says.replace("[", r"\[")):
        r.classify_clip(clip)
    assert r.state().seen == 0   # nothing moved


def test_clips_of_another_sample_rate_are_refused_naming_both_rates(artifact, tiny, tmp_path):
    """A clip file's `sample_rate_hz` (.npz) against device.json's: another rate is refused
    before anything runs; its own rate runs; where either names none, nothing is checked."""
    from edgeswitch.data.loaders import load_npz
    from edgeswitch.device.export import export_device, read_bundle
    from edgeswitch.device.runner import DeviceRunner

    export_device(read_bundle(tiny["dir"]), tmp_path / "art", operating_point=tiny["op"],
                  sample_rate_hz=50.0)
    X, streams = tiny_stream(6)
    np.savez(tmp_path / "c.npz", X=X, streams=streams, classes=np.asarray(CLASSES),
             sample_rate_hz=25.0)
    clips = load_npz(tmp_path / "c.npz")
    assert clips.sample_rate_hz == 25.0
    r = DeviceRunner(tmp_path / "art")
    with pytest.raises(DataError, match=r"sampled at 25 Hz.*model at 50 Hz"):
        r.classify(clips.X, clips.streams, sample_rate_hz=clips.sample_rate_hz)
    with pytest.raises(DataError, match=r"25 Hz.*50 Hz"):
        r.classify_clip(X[0], sample_rate_hz=25)
    assert r.state().seen == 0 and r.state("s0").seen == 0   # nothing moved
    assert len(r.classify(X, streams, sample_rate_hz=50)) == len(X)
    assert len(DeviceRunner(artifact).classify(X, sample_rate_hz=25)) == len(X)  # no rate
    np.savez(tmp_path / "none.npz", X=X, classes=np.asarray(CLASSES))
    assert load_npz(tmp_path / "none.npz").sample_rate_hz is None
    for bad in ([50.0, 50.0], 0.0, "50"):
        np.savez(tmp_path / "bad.npz", X=X, classes=np.asarray(CLASSES), sample_rate_hz=bad)
        with pytest.raises(DataError, match="'sample_rate_hz' must be one number > 0"):
            load_npz(tmp_path / "bad.npz")


def test_a_state_of_another_shape_or_artifact_is_refused(artifact, tiny, tmp_path):
    from edgeswitch.device.export import export_device, read_bundle
    from edgeswitch.device.runner import DeviceRunner, DeviceState

    r = DeviceRunner(artifact)
    st = r.initial_state()
    with pytest.raises(DataError, match=r"shape \[1, 1, 4\].*\[1, 2, 4\]"):
        r.set_state("s", DeviceState(st.belief[:, :1], st.age, st.last, st.artifact_id))
    with pytest.raises(DataError, match="finite"):
        r.set_state("s", DeviceState(st.belief * np.nan, st.age, st.last, st.artifact_id))
    other = export_device(read_bundle(tiny["dir"]), tmp_path,
                          router=tiny_routers(tiny)["belief-fusion"],
                          operating_point=tiny["op"])["artifact_id"]
    assert other != r.artifact_id
    with pytest.raises(DataError, match="another export"):
        r.set_state("s", DeviceState.from_dict(st.to_dict() | {"artifact_id": other}))
    r.set_state("s", DeviceState.from_dict(st.to_dict()))   # its own round-trips


def test_a_changed_or_missing_artifact_file_is_refused(artifact, tmp_path):
    import shutil

    from edgeswitch.device.runner import DeviceRunner

    d = tmp_path / "copy"
    shutil.copytree(artifact, d)
    with pytest.raises(DataError, match="no int8 graph"):
        DeviceRunner(d, variant="int8")
    (d / "device.onnx").write_bytes((d / "device.onnx").read_bytes() + b"\0")
    with pytest.raises(DataError, match="SHA-256 differs"):
        DeviceRunner(d)
    (d / "device.onnx").unlink()
    with pytest.raises(DataError, match="device graph not found"):
        DeviceRunner(d)
    spec = json.loads((d / "device.json").read_text())
    (d / "device.json").write_text(json.dumps(spec | {"format_version": 99}))
    with pytest.raises(DataError, match="format version 99"):
        DeviceRunner(d)
    (d / "device.json").unlink()
    with pytest.raises(DataError, match="device.json not found"):
        DeviceRunner(d)


def test_a_bundle_fitted_for_another_edge_model_is_refused(tiny, tmp_path):
    import shutil

    from edgeswitch.device.export import export_device
    from edgeswitch.models import ModelOutput
    from edgeswitch.switcher import LinearSwitcher
    from edgeswitch.switcher.stream import BeliefRouter

    d = tmp_path / "bundle"
    shutil.copytree(tiny["dir"], d)
    rng = np.random.default_rng(0)
    wide = ModelOutput(rng.dirichlet(np.ones(K), 50), rng.random((50, E + 2)))
    LinearSwitcher().fit(wide, rng.random(50)).save(d / "switcher.npz")
    with pytest.raises(ModelError, match="embedding of 7.*gives 4 classes and 5"):
        export_device(d, tmp_path / "out")
    shutil.copy(tiny["dir"] / "switcher.npz", d / "switcher.npz")
    BeliefRouter().save(d / "router.json", ("a", "b", "c", "x"))
    with pytest.raises(DataError, match="fitted for classes"):
        export_device(d, tmp_path / "out")
    (d / "router.json").unlink()
    (d / "switcher.npz").unlink()
    with pytest.raises(DataError, match="lacks switcher.npz"):
        export_device(d, tmp_path / "out")
    with pytest.raises(DataError, match="bundle folder not found"):
        export_device(tmp_path / "nowhere", tmp_path / "out")


def test_routers_no_graph_can_hold_are_refused(tiny, tmp_path):
    from edgeswitch.device.export import export_device, read_bundle
    from edgeswitch.switcher.routers import make_router

    with pytest.raises(ModelError, match="router 'random' cannot be exported"):
        export_device(read_bundle(tiny["dir"]), tmp_path, router=make_router("random"))


def test_the_runner_imports_nothing_beyond_a_slim_install(artifact, tiny):
    """numpy, onnxruntime, httpx, pydantic: with torch, scipy, pandas, pyarrow, matplotlib,
    scikit-learn and onnx made unimportable, the runner loads and routes a stream."""
    code = f"""
import importlib.abc, sys
BLOCKED = {{"torch", "scipy", "pandas", "pyarrow", "matplotlib", "sklearn", "onnx"}}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("not in a slim install: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
from edgeswitch.device.runner import DeviceRunner
r = DeviceRunner({str(artifact)!r})
X = np.random.default_rng(0).normal(size=(20, {T}, {C})).astype(np.float32)
rows = r.classify(X)
assert len(rows) == 20 and all(row["answered_by"] == "edge" for row in rows), rows[0]
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
print("slim ok", sum(row["offloaded"] for row in rows))
"""
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin"})
    assert p.returncode == 0, p.stderr
    assert "slim ok" in p.stdout


# -- the watch demo's bundle, every family -------------------------------------------------
@pytest.fixture(scope="module")
def watch(tmp_path_factory):
    """A small watch run deployed as the demo deploys it (models from the shared cache), the
    extra switcher families fitted on its DMD records, and one test subject's clips in
    stream order (each recording its own stream)."""
    from edgeswitch.config import load_config
    from edgeswitch.models.cache import default_cache_dir
    from edgeswitch.pipeline import build
    from edgeswitch.pipeline.deploy import save_bundle
    from edgeswitch.switcher.routers import SwitcherRouter
    from edgeswitch.switcher.select import SwitcherSpec
    from edgeswitch.switcher.stream_fit import fit_belief_switcher, switcher_records

    d = tmp_path_factory.mktemp("watch-device")
    cfg = load_config(dataset="watch", overrides={
        "edge.epochs": 2, "cloud.epochs": 2, "cloud.arch_params": {"width": 16},
        "latency_calls": 5, "calibration.rate": 0.2})
    a = build(cfg, d, cache_dir=default_cache_dir(), progress=False)
    save_bundle(a, d / "bundle")
    rec = a.records
    specs = {"linear": SwitcherSpec("linear", "hard"),
             "mlp": SwitcherSpec("mlp", "hard", epochs=100),
             "gbt": SwitcherSpec("gbt", "hard", features=("proba", "confidence", "embedding"))}
    answer = a.fusion.combine(rec.edge_proba, rec.cloud_proba)
    stream_records = switcher_records(a.router, rec.edge, rec.cloud_proba, answer,
                                      rec.stream_lists())
    routers = {"belief": a.router}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fam, spec in specs.items():
            routers[fam] = SwitcherRouter(spec.build(0, fam).fit(rec.edge, rec.target("hard"),
                                                                 rec.groups))
            routers[f"belief-switcher-{fam}"] = fit_belief_switcher(a.router, spec,
                                                                    stream_records)
    test = a.splits.test
    one = test.subset(np.nonzero(test.groups == test.groups[0])[0])
    one = one.subset(one.stream_order())
    return {"a": a, "dir": d, "routers": routers, "clips": one}


def watch_op(a, router, adaptive: bool):
    """An operating point at 25% offload for `router`, calibrated on the calib split as the
    pipeline does (per clip: the trust of every clip; a stream router: run over the calib
    streams with the cloud answering)."""
    from edgeswitch.data.clips import stream_lists
    from edgeswitch.switcher import calibrate_offload
    from edgeswitch.switcher.calibrate import calibrate_stream

    calib = a.splits.calib
    edge = a.edge.outputs(calib.X)
    if not router.stateful:
        return calibrate_offload(router.trust(edge), 0.25, adaptive=adaptive)
    cloud = a.cloud.predict_proba(calib.X)
    return calibrate_stream(router, edge, cloud, a.fusion.combine(edge.proba, cloud),
                            stream_lists(calib.streams, calib.t), 0.25, adaptive=adaptive)[0]


WATCH_ROUTERS = ["max_prob", "margin", "entropy", "linear", "mlp", "gbt", "belief",
                 "belief-switcher-linear", "belief-switcher-mlp", "belief-switcher-gbt"]


@pytest.mark.slow
@pytest.mark.parametrize("name", WATCH_ROUTERS)
def test_watch_device_graph_decides_and_answers_as_the_python_runtime(watch, tmp_path, name):
    """Every family, per clip and over the stream, at a fixed and at an adaptive operating
    point: the device graph's offloads and labels are the runtime's, probabilities to 1e-5."""
    from edgeswitch.device.export import export_device, read_bundle
    from edgeswitch.switcher.routers import make_router

    a, clips = watch["a"], watch["clips"]
    router = watch["routers"].get(name) or make_router(name)
    bundle = read_bundle(watch["dir"] / "bundle")
    for adaptive in (False, True):
        op = watch_op(a, router, adaptive)
        out = tmp_path / str(adaptive)
        export_device(bundle, out, router=router, operating_point=op)
        ref = python_runtime(a.edge, router, a.cloud, op, a.fusion, clips.X, clips.streams)
        assert_parity(ref, device_runtime(out, a.cloud, clips.X, clips.streams), a.edge.classes_)


@pytest.mark.slow
def test_watch_bundle_exports_with_the_cli_and_its_int8_graph_mostly_agrees(watch, tmp_path):
    """The bundle as the demo writes it, through `export-device --int8`: the float graph is
    the runtime; the int8 one answers the same label for most clips."""
    from edgeswitch.cli.main import main

    a, clips = watch["a"], watch["clips"]
    assert main(["export-device", str(watch["dir"] / "bundle"), "--out", str(tmp_path),
                 "--int8", "--sample-rate", "50"]) == 0
    spec = json.loads((tmp_path / "device.json").read_text())
    assert spec["router"]["name"] == "belief" and spec["operating_point"]["adaptive"]
    ref = python_runtime(a.edge, a.router, a.cloud, a.operating_point, a.fusion, clips.X,
                         clips.streams)
    assert_parity(ref, device_runtime(tmp_path, a.cloud, clips.X, clips.streams),
                  a.edge.classes_)
    int8 = device_runtime(tmp_path, a.cloud, clips.X, clips.streams, variant="int8")
    assert np.mean(int8[1].argmax(axis=1) == ref[1].argmax(axis=1)) > 0.8
