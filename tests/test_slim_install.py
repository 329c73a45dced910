"""A real slim install: a fresh venv with only edgeswitch's core (`pip install -c
requirements/lock.txt edgeswitch`, no extra) lacks the training stack, and its `classify`
against a `serve-cloud` over HTTP gives the answers a full install gives on the same clips, as
does `export-device`'s single-file artifact run there by ONNX Runtime alone (DeviceRunner).

Needs pip to reach PyPI (or its cache), as the README's commands do; tests/test_device_imports.py
checks the same path offline with the heavy packages blocked instead of absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deployed import export_bundle, jsonl, make_bundle, run_cli

# one worker builds the venv once for the three tests (a module fixture is per worker)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slim_install")]
ROOT = Path(__file__).resolve().parents[1]
# import names a core install must not have (onnxruntime pulls protobuf, not onnx)
ABSENT = ("torch", "pandas", "pyarrow", "matplotlib", "scipy", "sklearn", "seglearn", "pyts",
          "onnx")


# in the core venv: the artifact over the clips, asking the server (argv: artifact, url,
# token, clips.npz); prints its rows as JSON
DEVICE_RUN = """
import json, sys
import numpy as np
from edgeswitch.cloud.remote import RemoteCloud
from edgeswitch.config import RuntimeConfig
from edgeswitch.device.runner import DeviceRunner
art, url, token, clips = sys.argv[1:]
classes = DeviceRunner(art).classes
cloud = RemoteCloud(url, classes, RuntimeConfig(deadline_ms=30000), token=token)
with np.load(clips) as f:
    X, ids = f["X"], f["ids"]
print(json.dumps(DeviceRunner(art, cloud=cloud).classify(X, ids=ids)))
"""


def _run(*cmd, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """A command of the venv's: without PYTHONPATH, which could point it at this tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    """The bin/ folder of a venv with only the core installed, from a copy of the package
    (a build in this tree would leave build/ and *.egg-info behind, shared by every worker)."""
    d = tmp_path_factory.mktemp("slim")
    src = d / "src"
    shutil.copytree(ROOT / "edgeswitch", src / "edgeswitch",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = _run(sys.executable, "-m", "venv", d / "venv")
    assert r.returncode == 0, r.stderr
    bin_ = d / "venv" / "bin"
    # the lock as constraints, as the README's commands install; pip's own cache is reused
    r = _run(bin_ / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
             "-c", ROOT / "requirements" / "lock.txt", src, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return bin_


def test_the_core_venv_has_no_training_stack_and_only_locked_versions(core_venv):
    r = _run(core_venv / "python", "-c",
             "import importlib.util, edgeswitch\n"
             f"print([m for m in {ABSENT!r} if importlib.util.find_spec(m)])\n"
             "print(edgeswitch.__file__)", cwd=core_venv)  # not this tree's folder
    assert r.returncode == 0, r.stderr
    brought, where = r.stdout.splitlines()
    assert brought == "[]", f"a core install brings {brought}"
    assert where.startswith(str(core_venv.parent)), where  # the venv's copy, not this tree
    # every package the core needs, directly or not, is installed at the lock's version
    scripts = str(ROOT / "scripts")  # scripts/lock.py
    r = _run(core_venv / "python", "-c", f"import sys; sys.path.insert(0, {scripts!r}); "
             "import lock; sys.exit(lock.check_env([]))", cwd=core_venv)
    assert r.returncode == 0, r.stdout + r.stderr


def test_classify_on_a_core_install_answers_as_a_full_install(core_venv, tmp_path, bm_files,
                                                              basicmotions):
    from edgeswitch.serving.server import ServerProcess

    b = make_bundle(tmp_path, bm_files, basicmotions, n_clips=20)  # built by the full install
    token = tmp_path / "token"
    token.write_text("s3cret")
    args = ["classify", "--data", b["clips"], "--edge", b["edge"], "--switcher", b["switcher"],
            "--op", b["op"], "--token-file", token, "--deadline-ms", "30000", "--quiet"]
    with ServerProcess(bm_files["cloud"], token="s3cret") as server:
        slim = _run(core_venv / "edgeswitch", *args, "--cloud-url", server.url, "--out",
                    tmp_path / "slim.jsonl", "--log", tmp_path / "slim.sqlite",
                    cwd=tmp_path)
        full = run_cli(*args, "--cloud-url", server.url, "--out", tmp_path / "full.jsonl")
        # watch on the same clips as a sensor recording: the edge's answer to each clip comes
        # at once (the cloud's later, from a queue whose timing varies)
        watch = ["watch", b["clips"], "--edge", b["edge"], "--switcher", b["switcher"], "--op",
                 b["op"], "--cloud-url", server.url, "--token-file", token]
        slim_watch = _run(core_venv / "edgeswitch", *watch, "--out",
                          tmp_path / "slim-watch.jsonl", cwd=tmp_path)
        full_watch = run_cli(*watch, "--out", tmp_path / "full-watch.jsonl")

        # the single-file artifact: exported by the full install, run in the core venv
        # through ONNX Runtime alone (DeviceRunner), asking the same server
        art = export_bundle(b, tmp_path / "bundle", tmp_path / "device")
        device = _run(core_venv / "python", "-c", DEVICE_RUN, art, server.url, "s3cret",
                      b["clips"], cwd=tmp_path)

    for r in (slim, full, slim_watch, full_watch, device):
        assert r.returncode == 0, r.stderr
    rows = jsonl(tmp_path / "slim.jsonl")
    assert len(rows) == 20 and all(r["verified"] for r in rows)
    assert {r["answered_by"] for r in rows} == {"edge", "cloud"}  # the server was asked

    def answers(path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "latency_ms"} for r in jsonl(path)]

    assert answers(tmp_path / "slim.jsonl") == answers(tmp_path / "full.jsonl")
    # the artifact decides and answers as classify does (float32 graph: scores to 1e-5)
    on_device = json.loads(device.stdout)
    assert [(d["clip_id"], d["label"], d["answered_by"], d["verified"]) for d in on_device] \
        == [(r["clip_id"], r["label"], r["answered_by"], r["verified"]) for r in rows]
    for d, r in zip(on_device, rows, strict=True):
        assert d["switcher_score"] == pytest.approx(r["switcher_score"], abs=1e-5)
        assert d["proba"] == pytest.approx(r["proba"], abs=1e-5)

    def edge_answers(path) -> list[tuple]:
        return [(w["clip_id"], w["label"], w["switcher_score"], w["proba"])
                for w in jsonl(path) if w["kind"] == "clip"]

    assert len(edge_answers(tmp_path / "slim-watch.jsonl")) == 20
    assert edge_answers(tmp_path / "slim-watch.jsonl") == \
        edge_answers(tmp_path / "full-watch.jsonl")


def test_a_core_install_names_the_extra_a_command_needs(core_venv, tmp_path):
    for command, extra in ((["train-models", "--data", "basicmotions"], "train"),
                           (["serve-cloud", "--cloud", "cloud.onnx"], "serve")):
        r = _run(core_venv / "edgeswitch", *command, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip() == (f"edgeswitch {command[0]} needs the '{extra}' extra: "
                                    f"pip install 'edgeswitch[{extra}]'")
