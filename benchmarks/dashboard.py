"""What one poll of `edgeswitch dashboard` costs on a large decision log, against the log's
own pandas summary (`edgeswitch log`), in one process (compare as a ratio).

    python benchmarks/dashboard.py --rows 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeswitch.runtime.decision_log import Decision, DecisionLog
from edgeswitch.serving.dashboard.view import LogView

CLASSES = tuple("abcdefg")


def write_log(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` decisions with 7-class probabilities and a 64-float embedding each; half
    offloaded and answered by the cloud, one second apart."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=64).astype(np.float32)
    with DecisionLog(path, CLASSES, "edge", "cloud") as log:
        for start in range(0, rows, 5000):
            log.append([Decision(
                f"c{i}", "g", "a", "cloud" if i % 2 else "edge", True, None, bool(i % 2),
                False, float(rng.random()), rng.dirichlet(np.ones(7)), emb,
                rng.dirichlet(np.ones(7)) if i % 2 else None, 1.0, 2.0 if i % 2 else None,
                3.0, 1, time=1000.0 + i) for i in range(start, min(start + 5000, rows))])


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "decisions.sqlite"
        write_log(path, args.rows)
        view = LogView(path)
        view.summary()  # warm: the file in the page cache, the reader open
        poll = median_ms(lambda: view.summary(30, 20), args.repeats)
        with DecisionLog(path) as log:
            full = median_ms(lambda: log.summary(30), max(1, args.repeats // 2))
        view.close()
        print(f"{args.rows} rows ({path.stat().st_size / 1e6:.0f} MB): dashboard poll "
              f"{poll:.0f} ms, decision log summary {full:.0f} ms (x{full / poll:.1f})")


if __name__ == "__main__":
    main()
