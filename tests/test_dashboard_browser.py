"""`edgeswitch dashboard` in a real browser while a real `classify` writes the log.

Three real processes: `serve-cloud` (sleeping 0.1 s per request and failing 15% of them, so
the run takes several seconds and has fallbacks), `classify` against it writing the decision
log one clip per call, and `edgeswitch dashboard LOG --port 0`; headless Chromium (the OS
package, driven by playwright) opens the page. While `classify` runs the page must show each
count the log held within 5 s; once it has ended, the page's clip count, offload rate and
fallbacks must equal the log's (read here with sqlite, read-only). A screenshot is saved under
$EDGESWITCH_ARTIFACTS (default tests/artifacts/, ignored by git) and its path printed.

CI installs the browser (scripts/install-browser.sh, called by .ci/run): without it this test
fails. Set EDGESWITCH_NO_BROWSER=1 to skip it on a machine that has none.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.browser import CHROMIUM, NO_BROWSER, sync_playwright_or_fail
from tests.deployed import classify_args, make_bundle

ARTIFACTS = Path(os.environ.get("EDGESWITCH_ARTIFACTS",
                                Path(__file__).parent / "artifacts"))
N_CLIPS = 160
UPDATE_S = 5.0  # the page shows new rows within this

pytestmark = [pytest.mark.slow, NO_BROWSER]


def _log_figures(path: Path) -> tuple[int, int, int]:
    """(clips, offloaded, fallbacks) committed to the log, as a reader sees them."""
    if not path.exists():
        return 0, 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        n, off, fb = db.execute("SELECT COUNT(*), COALESCE(SUM(offloaded), 0), "
                                "COALESCE(SUM(verified = 0), 0) FROM decisions").fetchone()
        return n, off, fb
    except sqlite3.OperationalError:  # the writer is still making its tables
        return 0, 0, 0
    finally:
        db.close()


def _start_dashboard(log: Path, err: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    fh = err.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edgeswitch", "dashboard", str(log),
                             "--port", "0", *extra], stderr=fh, stdout=subprocess.DEVNULL,
                            env=os.environ | {"PYTHONUNBUFFERED": "1", "EDGESWITCH_TOKEN": ""})
    fh.close()
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end and proc.poll() is None:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", err.read_text())
        if m:
            return proc, m.group(1)
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the dashboard did not print its port: {err.read_text()[-2000:]}")


def _shown(page) -> int:
    value = page.get_attribute("#clips", "data-value")
    return int(value) if value is not None else 0


def _wait_until(check, timeout_s: float) -> None:
    """Poll `check()` from the test (bounded). Not page.wait_for_function: its string predicate
    is evaluated with eval() in the page, which the dashboard's CSP (script-src 'self')
    refuses whenever the predicate has to be polled."""
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, f"not within {timeout_s} s"
        time.sleep(0.05)


def test_the_page_follows_a_classify_run(bm_files, basicmotions, tmp_path):
    sync_playwright = sync_playwright_or_fail()
    from edgeswitch.serving.server import ServerProcess

    b = make_bundle(tmp_path, bm_files, basicmotions, n_clips=40)
    X = np.resize(b["X"], (N_CLIPS, *b["X"].shape[1:])).astype(np.float32)
    np.savez(tmp_path / "many.npz", X=X, ids=np.array([f"d{i:04d}" for i in range(N_CLIPS)]))
    log, token = tmp_path / "decisions.sqlite", secrets.token_urlsafe(16)
    (tmp_path / "token").write_text(token)
    dash, url = _start_dashboard(log, tmp_path / "dashboard.err")
    classify = None
    try:
        # each cloud answer 0.3 s late: the run lasts long enough to see the page follow it
        # three times or more, also on a loaded machine (at 0.1 s one run saw it once)
        with ServerProcess(b["cloud"], token=token, faults=("sleep:0.3", "http500@0.15")) \
                as server, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []  # script errors, CSP refusals, failed loads
            page.on("pageerror", lambda e: problems.append(f"error: {e}"))
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.goto(url + "/")
            page.wait_for_selector("#status.stale, #status.live", timeout=15_000)
            assert "waiting for" in page.inner_text("#status")  # no log yet
            classify = subprocess.Popen(
                [sys.executable, "-m", "edgeswitch",
                 *classify_args(b, str(tmp_path / "many.npz")), "--cloud-url", server.url,
                 "--token-file", str(tmp_path / "token"), "--retries", "0",
                 "--shadow-rate", "0.1", "--out", str(tmp_path / "out.jsonl"),
                 "--log", str(log)], stderr=subprocess.PIPE, text=True)
            delays, counts = [], []
            t_end = time.monotonic() + 240
            while classify.poll() is None and time.monotonic() < t_end:
                n = _log_figures(log)[0]
                if n == 0 or (counts and n == counts[-1]):
                    time.sleep(0.2)
                    continue
                t0 = time.monotonic()  # the log holds n rows now: the page must follow
                while _shown(page) < n and time.monotonic() - t0 < UPDATE_S + 1:
                    time.sleep(0.05)
                delays.append(time.monotonic() - t0)
                counts.append(n)
                assert _shown(page) >= n, f"page shows {_shown(page)}, log holds {n}"
                time.sleep(0.5)
            _, err = classify.communicate(timeout=60)
            assert classify.returncode == 0, err
            assert len(counts) >= 3, f"too few updates seen while classify ran: {counts}"
            assert max(delays) < UPDATE_S, delays

            n, offloaded, fallbacks = _log_figures(log)
            assert n == N_CLIPS and 0 < offloaded < n and fallbacks > 0
            _wait_until(lambda: _shown(page) == n, UPDATE_S)
            page.wait_for_timeout(1500)  # one more poll: the page is settled
            assert page.inner_text("#clips") == str(n)
            assert page.inner_text("#offload-rate") == f"{100 * offloaded / n:.1f}%"
            assert float(page.get_attribute("#offload-rate", "data-value")) == \
                pytest.approx(offloaded / n, abs=1e-12)
            assert page.inner_text("#fallbacks") == str(fallbacks)
            assert "http_500" in page.inner_text("#fallback-reasons")
            assert page.locator("#last tbody tr").count() == 20
            assert page.locator("#over-time polyline").count() == 2
            assert page.inner_text("#drift") == "off"
            assert problems == []
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000
        print(f"\nscreenshot: {shot}\nlog {n} clips, offloaded {offloaded} "
              f"({offloaded / n:.1%}), fallbacks {fallbacks}; page caught up with the log "
              f"in at most {max(delays):.2f} s over {len(counts)} checks {counts}")
    finally:
        if classify is not None and classify.poll() is None:
            classify.kill()
            classify.wait(10)
        dash.terminate()
        try:
            dash.wait(10)
        except subprocess.TimeoutExpired:
            dash.kill()


def test_the_page_sends_the_token_from_the_url_or_the_login_field(tmp_path):
    """With --token-file the API answers only the token: the page reads it from #token=...
    (and drops it from the address bar) or from its login field."""
    sync_playwright = sync_playwright_or_fail()
    from edgeswitch.runtime.decision_log import Decision, DecisionLog

    log, token = tmp_path / "decisions.sqlite", secrets.token_urlsafe(16)
    (tmp_path / "token").write_text(token)
    with DecisionLog(log, ("adl", "fall"), "edge-x") as w:
        w.append([Decision(f"c{i}", "cam", "adl", "edge", True, None, i % 4 == 0, False, 0.9,
                           np.array([0.8, 0.2]), None, None, 1.0, None, 1.0, 0)
                  for i in range(12)])
    dash, url = _start_dashboard(log, tmp_path / "dashboard.err", "--token-file",
                                 str(tmp_path / "token"))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url + "/#token=" + token)
            page.wait_for_selector("#status.live", timeout=15_000)
            assert page.inner_text("#clips") == "12"
            assert page.inner_text("#offload-rate") == "25.0%"
            assert "token" not in page.url  # out of the address bar (and its history)
            assert page.locator("#login").is_hidden()

            page = browser.new_context().new_page()  # a new tab's storage: no token
            page.goto(url + "/")
            page.wait_for_selector("#login", state="visible", timeout=15_000)
            assert page.inner_text("#clips") == "–"
            page.fill("#token", "wrong")
            page.click("#login button")
            _wait_until(lambda: page.inner_text("#login-error") != "", 10)
            page.fill("#token", token)
            page.click("#login button")
            page.wait_for_selector("#status.live", timeout=15_000)
            assert page.inner_text("#clips") == "12"
            browser.close()
    finally:
        dash.terminate()
        try:
            dash.wait(10)
        except subprocess.TimeoutExpired:
            dash.kill()
