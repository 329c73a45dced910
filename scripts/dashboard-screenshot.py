"""Make docs/img/dashboard.png: the dashboard in headless chromium while a real `classify`
replays the watch test subjects through a deployed bundle (`edgeswitch demo`'s OUT folder)
against a real `serve-cloud`, slowed by 20 ms a request and failing 5% of them, so the
over-time chart and the fallbacks have something to show.

    python scripts/dashboard-screenshot.py runs/demo docs/img/dashboard.png
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(bundle: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from edgeswitch.serving.server import ServerProcess

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        log, token = d / "decisions.sqlite", secrets.token_urlsafe(16)
        (d / "token").write_text(token)
        err = (d / "dash.err").open("w")
        dash = subprocess.Popen([sys.executable, "-m", "edgeswitch", "dashboard", str(log),
                                 "--port", "0"], stderr=err)
        with ServerProcess(bundle / "cloud.onnx", token=token,
                           faults=("sleep:0.02", "http500@0.05")) as server:
            url = None
            for _ in range(300):
                m = re.search(r"on (http://127\.0\.0\.1:\d+)/", (d / "dash.err").read_text())
                if m:
                    url = m.group(1)
                    break
                time.sleep(0.1)
            classify = subprocess.Popen([
                sys.executable, "-m", "edgeswitch", "classify", "--data", "watch", "--split",
                "test", "--edge", str(bundle / "edge.onnx"), "--switcher",
                str(bundle / "switcher.npz"), "--op", str(bundle / "operating_point.json"),
                "--cloud-url", server.url, "--token-file", str(d / "token"), "--retries", "0",
                "--shadow-rate", "0.05", "--out", str(d / "out.jsonl"), "--log", str(log),
                "--quiet"])
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url + "/")
                classify.wait(600)
                page.wait_for_timeout(2500)  # the last rows polled
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        dash.terminate()
        dash.wait(10)
        print(f"wrote {out} (classify exit {classify.returncode})")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
