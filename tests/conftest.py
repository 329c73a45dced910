"""Shared fixtures: small real models trained once per run on BasicMotions.

The suite runs in parallel (pytest-xdist: `-n N --dist loadgroup`, as .ci/run does). Any test
may run in any worker process, beside any other test, so a test:
- listens on port 0 (the OS picks a free one) or on a socket it holds, never a fixed port;
- writes under tmp_path / tmp_path_factory, never a fixed path (the model cache,
  $EDGESWITCH_CACHE or ~/.cache/edgeswitch, is the one shared place: what a test trains
  through it is keyed by data and settings, and saved atomically, so workers may share it);
- changes the environment only through monkeypatch (each worker is its own process).
Adding tests (a new router, a new module): nothing to do, unless they
- start Ray: mark them `@pytest.mark.ray` (and slow); a `ray` test joins the xdist group
  "ray", run one after another by one worker (each cluster is ~1.4 GB and several
  processes, and its start-up is what a busy machine slows most), unless it names a group of
  its own: the two Ray Serve runs (the fuzz run and the service API tests, each a pytest run
  of its own) are "ray-serve", beside Ray's DMD tests (two clusters at most);
- cannot share the machine with each other for another reason: give them one group,
  `@pytest.mark.xdist_group("NAME")`;
- need an expensive artefact that is the same for every worker (trained models): compute it
  once per run under `run_once(tmp_path_factory, "NAME")`, as `bm_models` does, and let the
  other workers read its files.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# An xdist worker shares the cores with the others (six workers on two cores in CI): one
# compute thread each, for torch and OpenMP in it and in the commands it starts. With several,
# their threads spin-wait on each other; nothing a test asserts depends on the thread count.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from edgeswitch.config import preset  # noqa: E402
from edgeswitch.data import load_dataset, split_by_group  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into groups
def pytest_collection_modifyitems(config, items):
    """Every `ray` test in the group "ray" (unless it names its own); and the longest work
    first (the Ray groups, then the slow tests that ask for a longer timeout, then the other
    slow tests: xdist hands out work in this order, so the long chains start at once and the
    many short tests fill the workers at the end)."""
    for item in items:
        if item.get_closest_marker("ray") is not None and \
                item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group("ray"))

    def timeout(item) -> float:
        mark = item.get_closest_marker("timeout")
        return float(mark.args[0]) if mark and mark.args else 0.0

    items.sort(key=lambda item: (item.get_closest_marker("ray") is None,
                                 item.get_closest_marker("slow") is None, -timeout(item)))


RUN_ROOT_ENV = "EDGESWITCH_TEST_RUN_ROOT"  # a pytest run inside a test shares its parent's


def _run_root(tmp_path_factory) -> Path:
    """A folder this whole run shares: the xdist workers' common temp root, else the session's
    own temp folder; a pytest run a test starts (the Ray tests do) gets its parent's, through
    the environment it inherits."""
    if os.environ.get(RUN_ROOT_ENV):
        return Path(os.environ[RUN_ROOT_ENV])
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    os.environ[RUN_ROOT_ENV] = str(root)
    return root


@contextmanager
def run_once(tmp_path_factory, name: str) -> Iterator[Path]:
    """`with run_once(tmp_path_factory, "x") as d:` a folder shared by every worker of this
    run, held by one worker at a time (an exclusive file lock): the first computes what it
    keeps there, the next find it done."""
    d = _run_root(tmp_path_factory) / f"shared-{name}"
    d.mkdir(exist_ok=True)
    with open(d.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield d
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def _share_this_run_with_inner_runs(tmp_path_factory):
    """Sets $EDGESWITCH_TEST_RUN_ROOT before any test starts a pytest run of its own: that run
    then loads this run's trained models instead of training them again."""
    _run_root(tmp_path_factory)


@pytest.fixture(scope="session")
def basicmotions():
    return load_dataset("basicmotions")


@pytest.fixture(scope="session")
def bm_splits(basicmotions):
    return split_by_group(basicmotions, (0.5, 0.2, 0.1, 0.2), seed=0)


@pytest.fixture(scope="session")
def bm_models(bm_splits, tmp_path_factory):
    """A tiny edge and cloud trained for real on BasicMotions' train split (a few seconds),
    once per run: the other workers load the same models from the run's model cache."""
    from edgeswitch.pipeline import train_models

    cfg = preset("basicmotions")
    cfg.edge.epochs, cfg.cloud.epochs = 10, 10
    with run_once(tmp_path_factory, "bm_models") as cache:
        return train_models(cfg, bm_splits.train, cache, progress=False)


@pytest.fixture(scope="session")
def bm_files(bm_models, tmp_path_factory):
    """The BasicMotions models as ONNX files, as a deployment ships them."""
    edge, cloud = bm_models
    d = tmp_path_factory.mktemp("bm_models")
    return {"edge": edge.save(d / "edge.onnx"), "cloud": cloud.save(d / "cloud.onnx")}
