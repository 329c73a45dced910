"""An edge run (`classify` or `watch` with `--metrics-port 0`) as a real process, and a
Prometheus scrape of it or of a cloud server: for the metrics, Grafana and server tests (and the
load benchmarks)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

URL = re.compile(r"metrics on (http://\S+/metrics)")


@contextmanager
def edge_process(args, tmp_path: Path, timeout: float = 120):
    """`python -m edgeswitch ARGS --metrics-port 0` started; yields (process, metrics URL,
    stderr file) once the exporter is up. On exit: Ctrl-C (ends a linger), then a kill."""
    err = tmp_path / f"stderr-{time.monotonic_ns()}.txt"
    with err.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "edgeswitch", *map(str, args),
                                 "--metrics-port", "0"], stdout=subprocess.DEVNULL,
                                stderr=fh, env=dict(os.environ))
    try:
        end = time.monotonic() + timeout
        while not (m := URL.search(err.read_text())):
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}: {err.read_text()}")
            if time.monotonic() > end:
                raise AssertionError(f"no metrics URL in {timeout} s: {err.read_text()}")
            time.sleep(0.05)
        yield proc, m.group(1), err
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)  # a busy machine (six test workers on two cores) is slow to exit
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_for(text: str, err: Path, proc, timeout: float = 120) -> None:
    """Until `text` is on the process's stderr (bounded)."""
    end = time.monotonic() + timeout
    while text not in err.read_text():
        if proc.poll() is not None and text not in err.read_text():
            raise AssertionError(f"exited {proc.returncode} before {text!r}: "
                                 f"{err.read_text()}")
        if time.monotonic() > end:
            raise AssertionError(f"no {text!r} in {timeout} s: {err.read_text()}")
        time.sleep(0.05)


def families(url: str, token: str | None = None) -> dict:
    """GET `url` (as curl does) and parse it: {family name: family}."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(url, headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(fams: dict, sample: str, **labels) -> float:
    """The sum of the samples named `sample` whose labels include `labels`."""
    total, seen = 0.0, False
    for fam in fams.values():
        for s in fam.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total, seen = total + s.value, True
    assert seen, f"no sample {sample} {labels}"
    return total


def scrape(server_url: str, token: str | None = None) -> dict[str, float]:
    """A server's `/metrics`, each sample name summed over its labels (e.g.
    `edgeswitch_batch_size_count`: model runs so far; `edgeswitch_errors_total`: all errors)."""
    totals: dict[str, float] = {}
    for fam in families(server_url.rstrip("/") + "/metrics", token).values():
        for sample in fam.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals
