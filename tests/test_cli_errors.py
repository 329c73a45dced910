"""The CLI never shows a traceback or a false success: each failure case gets a clear
message and a non-zero exit where the run did not do what was asked (real subprocesses)."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.deployed import classify_args, jsonl, make_bundle, run_cli


@pytest.fixture(scope="module")
def bundle(bm_files, basicmotions, tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle"), bm_files, basicmotions, n_clips=40)


def clear_error(r, code: int = 2, *needles: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def _broken_dmd(bundle, tmp_path, column: str, row: int, change) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(bundle["dmd"])
    rows = table.column(column).to_pylist()
    rows[row] = change(rows[row])
    table = table.set_column(table.column_names.index(column), column,
                             pa.array(rows, table.schema.field(column).type))
    path = tmp_path / f"{column}.parquet"
    pq.write_table(table.replace_schema_metadata(pq.read_schema(bundle["dmd"]).metadata), path)
    return str(path)


@pytest.mark.parametrize("column,change,says", [
    ("edge_embedding", lambda r: r[:-1], "edge_embedding has 7 values, row 0 has 8"),
    ("cloud_proba", lambda r: None, "has no cloud_proba (null)"),
])
def test_ragged_or_null_parquet_rows_name_the_row_and_column(bundle, tmp_path, column,
                                                             change, says):
    import pyarrow.parquet as pq

    path = _broken_dmd(bundle, tmp_path, column, 3, change)
    clip = re.escape(repr(pq.read_table(path).column("clip_id")[3].as_py()))
    for args in (("train-switcher", "--dmd", path, "--out", tmp_path / "sw.npz"),
                 ("calibrate", "--dmd", path, "--switcher", bundle["switcher"], "--out",
                  tmp_path / "op.json")):
        r = run_cli(*args)
        clear_error(r, 2, says, "row 3")
        assert re.search(clip, r.stderr)
        assert not (tmp_path / "sw.npz").exists() and not (tmp_path / "op.json").exists()


def test_log_buckets_must_be_positive(bundle, tmp_path):
    log = tmp_path / "log.sqlite"
    assert run_cli(*classify_args(bundle), "--cloud", bundle["cloud"], "--out",
                   tmp_path / "o.jsonl", "--log", log).returncode == 0
    clear_error(run_cli("log", log, "--buckets", "-3"), 2, "--buckets", "must be >= 1")
    clear_error(run_cli("log", log, "--buckets", "x"), 2, "not a whole number")
    assert "40 decisions" in run_cli("log", log, "--buckets", "3").stdout


def test_log_refuses_a_database_that_is_not_a_decision_log_and_changes_nothing(tmp_path):
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE people (name TEXT)")
    db.execute("INSERT INTO people VALUES ('ada')")
    db.commit()
    db.close()
    before, mtime = other.read_bytes(), other.stat().st_mtime_ns
    time.sleep(0.01)
    r = run_cli("log", other)
    clear_error(r, 2, "not an edgeswitch decision log", "nothing was changed")
    assert other.read_bytes() == before and other.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]  # no -wal, no -shm
    # nor does --log of a run write into it
    garbage = tmp_path / "notes.sqlite"
    garbage.write_bytes(b"not a database at all" * 50)
    r = run_cli("log", garbage)
    clear_error(r, 2, "not a usable decision log")
    assert garbage.read_bytes() == b"not a database at all" * 50


def test_log_as_a_writer_refuses_another_database_too(bundle, tmp_path):
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    r = run_cli(*classify_args(bundle), "--cloud", bundle["cloud"], "--out",
                tmp_path / "o.jsonl", "--log", other)
    clear_error(r, 2, "not a decision log")
    assert other.read_bytes() == before


def test_serve_cloud_port_out_of_range(bundle):
    clear_error(run_cli("serve-cloud", "--cloud", bundle["cloud"], "--port", "70000"), 2,
                "--port", "0..65535")
    clear_error(run_cli("serve-cloud", "--cloud", bundle["cloud"], "--port", "-1"), 2,
                "0..65535")


def _serve(bundle, *args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "EDGESWITCH_TOKEN"}
    return subprocess.Popen([sys.executable, "-m", "edgeswitch", "serve-cloud", "--cloud",
                             bundle["cloud"], *args], stderr=subprocess.PIPE, text=True,
                            env=env | {"PYTHONUNBUFFERED": "1"})


def test_serve_cloud_port_0_prints_the_port_it_bound(bundle):
    import httpx

    proc = _serve(bundle, "--port", "0")
    try:
        line, t_end = "", time.monotonic() + 60
        while time.monotonic() < t_end and "serving" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "server exited"
        m = re.search(r"on http://127\.0\.0\.1:(\d+) ", line)
        assert m and int(m.group(1)) > 0, line
        r = httpx.get(f"http://127.0.0.1:{m.group(1)}/healthz", timeout=5)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


def test_serve_cloud_on_a_port_in_use_prints_the_error_and_no_banner(bundle):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _serve(bundle, "--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "serving" not in err


@pytest.fixture(scope="module")
def server(bundle):
    from edgeswitch.serving.server import ServerProcess

    with ServerProcess(bundle["cloud"], token="s3cret") as s:
        yield s


def _classify(bundle, tmp_path, *args):
    out = tmp_path / "out.jsonl"
    r = run_cli(*classify_args(bundle), "--out", out, *args,
                env={"EDGESWITCH_TOKEN": ""})
    return r, jsonl(out)


def test_classify_against_the_server_succeeds_with_the_token(bundle, server, tmp_path):
    (tmp_path / "token").write_text("s3cret")
    # a deadline no busy machine misses: what is checked is that the token works
    r, rows = _classify(bundle, tmp_path, "--cloud-url", server.url, "--token-file",
                        tmp_path / "token", "--deadline-ms", "30000")
    clear_error(r, 0, "40 clips: 40 answered", "0 fallbacks")
    assert any(row["answered_by"] == "cloud" for row in rows)


@pytest.mark.parametrize("case,reason", [("missing token", "unauthorized"),
                                         ("dead url", "connection")])
def test_classify_whose_every_offload_fell_back_says_so_and_exits_3(bundle, server, tmp_path,
                                                                    case, reason):
    (tmp_path / "token").write_text("s3cret")
    with socket.socket() as s:  # a port nothing listens on (bound: no other test takes it)
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        args = {"missing token": ("--cloud-url", server.url),
                "dead url": ("--cloud-url", dead, "--token-file", tmp_path / "token")}[case]
        r, rows = _classify(bundle, tmp_path, *args)
    clear_error(r, 3, "the cloud answered none of the", f"{reason} ")
    assert len(rows) == 40 and all(row["answered_by"] == "edge" for row in rows)
    summary = [line for line in r.stderr.splitlines() if line.startswith("classify:")]
    assert len(summary) == 1 and re.search(rf"\b{reason} \d+", summary[0]), r.stderr
    fell = [row["fallback_reason"] for row in rows if not row["verified"]]
    assert reason in fell  # a busy machine may add a timeout before the circuit opens
    assert set(fell) <= {reason, "circuit_open", "timeout"}


@pytest.mark.parametrize("protocol", ["native", "openai"])
def test_classify_with_a_model_the_server_does_not_serve_is_a_clear_error(bundle, server,
                                                                          tmp_path, protocol):
    (tmp_path / "token").write_text("s3cret")
    r, rows = _classify(bundle, tmp_path, "--cloud-url", server.url, "--token-file",
                        tmp_path / "token", "--model", "no-such-model", "--protocol", protocol)
    clear_error(r, 2, "serves ['cloud'], not --model 'no-such-model'")
    assert rows == []


def test_classify_with_a_wrong_model_on_a_server_that_will_not_list_falls_back(bundle, server,
                                                                               tmp_path):
    """Without the token the model list cannot be read: the run starts, the server refuses
    every clip, and the exit code says so."""
    r, _ = _classify(bundle, tmp_path, "--cloud-url", server.url, "--model", "no-such-model",
                     "--protocol", "openai")
    clear_error(r, 3, "unauthorized")


def test_an_unexpected_error_is_one_line_with_a_hint(monkeypatch, capsys, tmp_path):
    """The generic guard: a bug deep inside a command prints one line naming it, exit 2;
    --debug (or EDGESWITCH_DEBUG=1) shows the traceback instead."""
    from edgeswitch.cli import main as cli
    from edgeswitch.runtime import decision_log

    def boom(self, buckets=10):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(decision_log.DecisionLog, "summary", boom)
    with decision_log.DecisionLog(tmp_path / "l.sqlite", ("a", "b")):
        pass
    monkeypatch.delenv("EDGESWITCH_DEBUG", raising=False)
    assert cli.main(["log", str(tmp_path / "l.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unexpected ZeroDivisionError in `log`: a bug" in err
    assert "--debug" in err and "EDGESWITCH_DEBUG=1" in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "log", str(tmp_path / "l.sqlite")])
    monkeypatch.setenv("EDGESWITCH_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["log", str(tmp_path / "l.sqlite")])
