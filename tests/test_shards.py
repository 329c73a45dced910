"""Sharded, resumable DMD on the embedded engine (Ray's runs are in test_ray.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edgeswitch.cli.main import main
from edgeswitch.cloud.spec import CloudSpec
from edgeswitch.data.files import corpus_files
from edgeswitch.dmd import DMDRecords, distill
from edgeswitch.dmd.corpus import plan_shards
from edgeswitch.dmd.parts import MANIFEST
from edgeswitch.dmd.runner import run
from edgeswitch.dmd.sinks import FolderSink
from edgeswitch.dmd.sources import NpzSource, OnnxModels
from edgeswitch.errors import DataError, EdgeSwitchError
from edgeswitch.models import OnnxClassifier
from tests.corpus import records_equal, write_corpus

read_dataset = DMDRecords.from_parquet  # a folder: the sharded run's records, checked


@pytest.fixture
def corpus(basicmotions, tmp_path) -> Path:
    write_corpus(basicmotions, tmp_path / "corpus", files=3)  # 27 + 27 + 26 clips
    return tmp_path / "corpus"


def run_local(corpus, bm_files, out, shard_size=7, cloud=None, batch_size=8):
    """The runner on the embedded engine: .npz shards into a folder of parts."""
    return run(NpzSource([str(corpus)], shard_size),
               OnnxModels(bm_files["edge"], CloudSpec(model=str(cloud or bm_files["cloud"]))),
               FolderSink(out), batch_size)


def test_sharded_run_matches_the_in_memory_distill(corpus, bm_files, basicmotions, tmp_path):
    summary = run_local(corpus, bm_files, tmp_path / "dmd")
    assert (summary.shards, summary.clips, summary.written) == (12, 80, 12)  # 4 + 4 + 4
    got = read_dataset(tmp_path / "dmd")
    edge, cloud = OnnxClassifier(bm_files["edge"]), OnnxClassifier(bm_files["cloud"])
    want = distill(edge, cloud, basicmotions)
    np.testing.assert_array_equal(got.ids, want.ids.astype(str))  # corpus order kept
    np.testing.assert_array_equal(got.groups, np.asarray(want.groups).astype(str))
    np.testing.assert_allclose(got.edge_proba, want.edge_proba, atol=1e-6)
    np.testing.assert_allclose(got.cloud_proba, want.cloud_proba, atol=1e-6)
    assert got.edge_model == want.edge_model and got.cloud_model == want.cloud_model
    # the folder is what train-switcher reads
    assert records_equal(DMDRecords.from_parquet(tmp_path / "dmd"), got)


def test_resume_redoes_only_missing_or_broken_parts(corpus, bm_files, tmp_path):
    out = tmp_path / "dmd"
    run_local(corpus, bm_files, out)
    whole = read_dataset(out)
    (out / "part-000003.parquet").unlink()
    (out / "part-000007.parquet").write_bytes(b"PAR1 truncated")   # a part cut short
    (out / ".part-000009.parquet.tmp-123-456").write_bytes(b"x")   # a killed writer's file
    with pytest.raises(DataError, match="unfinished run, 1 of 12"):
        read_dataset(out)
    summary = run_local(corpus, bm_files, out)
    assert (summary.skipped, summary.written) == (10, 2)
    assert not list(out.glob(".part-*"))
    assert records_equal(read_dataset(out), whole)
    again = run_local(corpus, bm_files, out)  # nothing left to do
    assert (again.skipped, again.written) == (12, 0)


def test_a_foreign_part_is_redone_and_a_tampered_folder_refused(corpus, bm_files, tmp_path):
    out = tmp_path / "dmd"
    run_local(corpus, bm_files, out)
    whole = read_dataset(out)
    # shard 1's part copied over shard 2's: right row count, wrong clips
    (out / "part-000002.parquet").write_bytes((out / "part-000001.parquet").read_bytes())
    with pytest.raises(DataError, match="part-000002.parquet: not this run's shard 2: its clip "
                       "ids"):
        read_dataset(out)
    summary = run_local(corpus, bm_files, out)
    assert (summary.skipped, summary.written) == (11, 1)
    assert records_equal(read_dataset(out), whole)


def test_one_writer_per_folder_and_clear_errors_on_a_broken_folder(corpus, bm_files, tmp_path):
    import fcntl

    out = tmp_path / "dmd"
    run_local(corpus, bm_files, out)
    with open(out / ".lock", "a") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(EdgeSwitchError, match="another distill run is writing"):
            run_local(corpus, bm_files, out)
    (out / MANIFEST).write_text('{"format": 2, "clas')
    with pytest.raises(DataError, match="corrupt manifest"):
        run_local(corpus, bm_files, out)
    with pytest.raises(DataError, match="corrupt manifest"):
        read_dataset(out)
    with pytest.raises(EdgeSwitchError,
                       match="batch_size: Input should be greater than or equal to 1"):
        run_local(corpus, bm_files, tmp_path / "d2", batch_size=0)


def test_a_changed_run_is_refused(corpus, bm_files, tmp_path):
    out = tmp_path / "dmd"
    run_local(corpus, bm_files, out)
    with pytest.raises(EdgeSwitchError, match="different shard_size"):
        run_local(corpus, bm_files, out, shard_size=5)
    with pytest.raises(EdgeSwitchError, match="different cloud_model"):
        run_local(corpus, bm_files, out, cloud=bm_files["edge"])
    first = corpus / "clips-0000.npz"
    with np.load(first) as f:
        arrays = dict(f)
    np.savez(first, **{k: v[:20] for k, v in arrays.items() if k != "classes"},
             classes=arrays["classes"])  # the corpus changed
    with pytest.raises(EdgeSwitchError, match="different"):
        run_local(corpus, bm_files, out)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "part-000000.parquet").write_bytes(b"")
    with pytest.raises(EdgeSwitchError, match="no " + MANIFEST):
        run_local(corpus, bm_files, stray)
    with pytest.raises(EdgeSwitchError, match="folder, not a file"):
        run_local(corpus, bm_files, tmp_path / "x.parquet")


def test_bad_corpora_get_clear_errors(corpus, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .npz"):
        corpus_files(empty)
    with pytest.raises(DataError, match="matches no files"):
        corpus_files(str(tmp_path / "nothing-*.npz"))
    with pytest.raises(DataError, match="no such file"):
        corpus_files(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="must be .npz"):
        corpus_files(tmp_path / "notes.txt")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    # a file that cannot be read is one unit that carries the reason (the run records it and
    # goes on: test_runner.py); the rest of the corpus is planned as usual
    shards, _ = plan_shards(corpus_files([corpus, bad]), 10)
    assert re.search("bad.npz: not a readable .npz", shards[-1].problem)
    assert (shards[-1].size, [s.problem for s in shards[:-1]]) == (0, [""] * 9)
    np.savez(tmp_path / "nox.npz", Y=np.zeros(3))
    assert "missing array 'X'" in plan_shards([tmp_path / "nox.npz"], 10)[0][0].problem
    dup = tmp_path / "dup"
    dup.mkdir()
    for name in ("a", "b"):  # the same ids in two files
        np.savez(dup / f"{name}.npz", X=np.zeros((2, 5, 3), np.float32), ids=["c0", "c1"])
    with pytest.raises(DataError, match="'c0' is in both"):
        plan_shards(corpus_files(dup), 10)
    with pytest.raises(EdgeSwitchError, match="shard size"):
        plan_shards(corpus_files(corpus), 0)


def test_unlabelled_files_without_groups_keep_clips_apart(tmp_path):
    from edgeswitch.data import load_dataset

    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", X=np.zeros((2, 5, 3), np.float32), classes=["x", "y"])
    groups = [load_dataset(tmp_path / f"{n}.npz").groups for n in ("a", "b")]
    assert not set(groups[0]) & set(groups[1])


def test_cli_sharded_distill_and_its_refusals(corpus, bm_files, tmp_path, capsys):
    out = tmp_path / "dmd"
    common = ["distill", "--data", str(corpus), "--edge", str(bm_files["edge"]),
              "--cloud", str(bm_files["cloud"]), "--quiet"]
    assert main([*common, "--out", str(out), "--shard-size", "30", "--json"]) == 0
    assert '"written": 3' in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "x.parquet"), "--engine", "ray"]) == 2
    assert "sharded folder" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "d2"), "--split", "pool"]) == 2
    assert "--split does not apply" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "sw.npz"), "--cloud-url",
                 "http://127.0.0.1:9"]) == 2  # both clouds
    assert "not both" in capsys.readouterr().err
    sw = tmp_path / "switcher.npz"
    assert main(["train-switcher", "--dmd", str(out), "--out", str(sw), "--quiet"]) == 0
    assert sw.exists()


def test_distill_settings_come_from_the_config_file_then_flags(corpus, bm_files, tmp_path,
                                                               capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[distill]\nshard_size = 40\nbatch_size = 5\n")
    common = ["distill", "--data", str(corpus), "--edge", str(bm_files["edge"]), "--cloud",
              str(bm_files["cloud"]), "--quiet", "--json", "--config", str(cfg)]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert '"shards": 3' in capsys.readouterr().out  # 27, 27, 26 clips: one shard per file
    assert main([*common, "--out", str(tmp_path / "b"), "--shard-size", "10"]) == 0
    assert '"shards": 9' in capsys.readouterr().out  # the flag wins
    cfg.write_text("[distill]\nengine = \"spark\"\n")
    assert main([*common, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "distill.engine: Input should be 'local' or 'ray' (got 'spark')" in err


def test_ray_serve_app_builder_checks_its_args(bm_files):
    ray = pytest.importorskip("ray", reason="needs the ray extra")
    from edgeswitch.scale.ray_serve import app_builder

    with pytest.raises(EdgeSwitchError, match="needs args.model_path"):
        app_builder({})
    with pytest.raises(EdgeSwitchError, match="app_builder: replica: unknown key"):
        app_builder({"model_path": str(bm_files["cloud"]), "replica": 2})
    with pytest.raises(EdgeSwitchError, match="max_batch"):
        app_builder({"model_path": str(bm_files["cloud"]), "max_batch": 0})
    with pytest.raises(EdgeSwitchError,
                       match="replicas: Input should be greater than or equal to 1"):
        app_builder({"model_path": str(bm_files["cloud"]), "replicas": 0})
    with pytest.raises(EdgeSwitchError, match=r"max_replicas \(1\) must be 0 or >= replicas"):
        app_builder({"model_path": str(bm_files["cloud"]), "replicas": 2, "max_replicas": 1})
    assert app_builder({"model_path": str(bm_files["cloud"]), "replicas": 2}) is not None
    assert not ray.is_initialized()  # building an application starts no Ray


def _fake_serve(monkeypatch, start=None, run=None, served=True):
    """scale.ray_serve.serve_ray with Ray's own calls replaced: no cluster starts. Returns the
    calls made; on_ready then stops the server as SIGTERM would."""
    pytest.importorskip("ray", reason="needs the ray extra")
    from edgeswitch.scale import cluster, ray_serve

    calls, handlers = [], {}

    def step(name, error):
        def call(*args, **kwargs):
            calls.append(name)
            if error is not None:
                raise error
        return call

    monkeypatch.setattr(cluster, "start_ray", lambda *a: calls.append("start_ray"))
    monkeypatch.setattr(ray_serve.serve, "start", step("serve.start", start))
    monkeypatch.setattr(ray_serve.serve, "run", step("serve.run", run))
    monkeypatch.setattr(ray_serve.serve, "shutdown",
                        step("serve.shutdown", RuntimeError("the controller is gone")))
    monkeypatch.setattr(ray_serve, "_wait_until_served", lambda *a: served)
    monkeypatch.setattr(ray_serve.signal, "signal", lambda sig, h: handlers.update({sig: h}))
    return calls, handlers


@pytest.mark.parametrize("error", ["timeout", "proxy restarted"])
def test_ray_serve_waits_past_rays_own_proxy_timeout(bm_files, monkeypatch, tmp_path, error):
    """serve.start's TimeoutError (Ray waits 60 s for its HTTP proxy) or ActorDiedError (the
    controller restarted a proxy slow to get ready) is not the end: the controller keeps
    starting one, and serve_ray waits for the app to answer through it. A local cluster gets
    Ray Serve's proxy readiness checks lengthened."""
    import os
    import signal

    pytest.importorskip("ray", reason="needs the ray extra")
    from ray.exceptions import ActorDiedError

    from edgeswitch.config import ServeConfig
    from edgeswitch.scale.ray_serve import BUSY_MACHINE_ENV, serve_ray

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in BUSY_MACHINE_ENV})
    calls, handlers = _fake_serve(monkeypatch, start={
        "timeout": TimeoutError("HTTP proxies not available after 60s."),
        "proxy restarted": ActorDiedError()}[error])
    ready = []
    serve_ray(bm_files["cloud"], ServeConfig(server="ray"), "127.0.0.1", 0,
              ready_file=str(tmp_path / "ready.json"),
              on_ready=lambda port: (ready.append(port), handlers[signal.SIGTERM]()))
    assert calls == ["start_ray", "serve.start", "serve.run", "serve.shutdown"]
    assert len(ready) == 1 and (tmp_path / "ready.json").exists()
    assert os.environ["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] == "60"


def test_a_failed_ray_serve_start_names_its_step_and_a_failed_shutdown_hides_nothing(
        bm_files, monkeypatch, capsys):
    from edgeswitch.config import ServeConfig
    from edgeswitch.scale.ray_serve import serve_ray

    calls, _ = _fake_serve(monkeypatch, run=RuntimeError("replica died: ActorDiedError"))
    with pytest.raises(EdgeSwitchError, match=r"Ray Serve failed while deploying the "
                       r"application .*: RuntimeError: replica died"):
        serve_ray(bm_files["cloud"], ServeConfig(server="ray"), "127.0.0.1", 0)
    assert calls[-1] == "serve.shutdown"  # it ran, and its own error is only a note
    assert "the controller is gone" in capsys.readouterr().err


def test_ray_serve_that_never_answers_through_its_proxy_is_a_clear_error():
    import socket
    import threading

    pytest.importorskip("ray", reason="needs the ray extra")
    from edgeswitch.scale.ray_serve import _wait_until_served

    with socket.socket() as s:  # bound, never listening: every connection is refused
        s.bind(("127.0.0.1", 0))
        with pytest.raises(EdgeSwitchError, match=r"HTTP proxy at http://127.0.0.1:\d+ did "
                           r"not serve the application in time \(ConnectError"):
            _wait_until_served("0.0.0.0", s.getsockname()[1], False, 0.0, threading.Event())
    stop = threading.Event()
    stop.set()
    assert _wait_until_served("127.0.0.1", 9, False, 1e12, stop) is False
