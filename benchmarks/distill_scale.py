"""DMD throughput: the embedded engine vs Ray Data with 1 and 2 workers per pool, in one run.

The corpus is the smartwatch data set's clips (all subjects, labels dropped) repeated `--reps`
times under new clip ids and written as `--files` unlabelled .npz files: real clips, a
corpus large enough that per-run overheads do not dominate. The edge and cloud are the data
set's default models (trained once, then from the demo's cache).

Each engine runs `edgeswitch distill` as a child process into a fresh folder; the Ray runs
start a local Ray cluster inside a loopback-only network namespace (needs root; see
edgeswitch.scale.netns). Figures per run: wall time, Ray start-up, throughput excluding
start-up, and whether its records equal the local run's bit for bit. Compare as ratios
within one run; the machine's core count bounds what 2 workers can gain.

    python benchmarks/distill_scale.py [--reps 10] [--files 16] [--shard-size 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, tests/

from benchmarks._results import output_args, write_results  # noqa: E402
from edgeswitch.config import DistillConfig, load_config  # noqa: E402
from edgeswitch.data.clips import ClipBatch  # noqa: E402
from edgeswitch.dmd import DMDRecords  # noqa: E402
from edgeswitch.models.cache import default_cache_dir  # noqa: E402
from edgeswitch.pipeline import load_data, split_data, train_models  # noqa: E402
from tests.corpus import records_equal, write_corpus  # noqa: E402
from tests.netns import RAY_ENV, LoopbackNetns  # noqa: E402


def models_and_corpus(tmp: Path, reps: int, files: int, progress: bool) -> tuple[Path, Path,
                                                                                  Path, int]:
    cfg = load_config(None, dataset="watch")
    data = load_data(cfg)
    edge, cloud = train_models(cfg, split_data(cfg, data).train, cache_dir=default_cache_dir(),
                               progress=progress)
    ids = np.concatenate([[f"rep{r:02d}/{i}" for i in data.ids] for r in range(reps)])
    clips = ClipBatch(X=np.concatenate([data.X] * reps), y=None,
                      groups=np.concatenate([np.asarray(data.groups).astype(str)] * reps),
                      classes=data.classes, ids=ids)
    write_corpus(clips, tmp / "corpus", files)
    return edge.save(tmp / "edge.onnx"), cloud.save(tmp / "cloud.onnx"), tmp / "corpus", \
        len(clips)


def distill(engine: str, workers: int, tmp: Path, edge: Path, cloud: Path, corpus: Path,
            args: argparse.Namespace) -> dict:
    out = tmp / f"dmd-{engine}-{workers}"
    cmd = [sys.executable, "-m", "edgeswitch", "distill", "--engine", engine, "--data",
           str(corpus), "--edge", str(edge), "--cloud", str(cloud), "--out", str(out),
           "--shard-size", str(args.shard_size), "--batch-size", str(args.batch_size),
           "--workers", str(workers), "--json", "--quiet"]
    env = os.environ | RAY_ENV
    t0 = time.perf_counter()
    if engine == "ray":
        with LoopbackNetns() as ns:
            r = subprocess.run(ns.wrap(cmd), env=env, capture_output=True, text=True,
                               timeout=args.timeout)
    else:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{engine} x{workers} failed:\n{r.stderr[-3000:]}")
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    return {"engine": engine, "workers": workers, "wall_s": wall, **summary}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10, help="copies of the data set in the corpus")
    ap.add_argument("--files", type=int, default=16, help=".npz files in the corpus")
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=DistillConfig().batch_size)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run, at most")
    output_args(ap, "distill_scale.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeswitch-distill-") as tmp:
        tmp = Path(tmp)
        edge, cloud, corpus, n = models_and_corpus(tmp, args.reps, args.files,
                                                   sys.stderr.isatty())
        runs = [distill("local", 1, tmp, edge, cloud, corpus, args)]
        for workers in (1, 2):
            runs.append(distill("ray", workers, tmp, edge, cloud, corpus, args))
        reference = DMDRecords.from_parquet(runs[0]["out"])
        for r in runs:
            r["identical_to_local"] = records_equal(DMDRecords.from_parquet(r["out"]),
                                                    reference)
            r.pop("out")
    by = {(r["engine"], r["workers"]): r for r in runs}
    ratios = {"ray2_over_ray1": by["ray", 2]["clips_per_s"] / by["ray", 1]["clips_per_s"],
              "ray1_over_local": by["ray", 1]["clips_per_s"] / by["local", 1]["clips_per_s"],
              "ray2_over_local_wall": by["local", 1]["wall_s"] / by["ray", 2]["wall_s"]}
    out = {"benchmark": "distill_scale", "clips": n, "reps": args.reps, "files": args.files,
           "shard_size": args.shard_size, "batch_size": args.batch_size, "runs": runs,
           "ratios": ratios,
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                       "python": platform.python_version()},
           "command": shlex.join(["python", *sys.argv]),
           "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}
    write_results(args, out, "distill_scale.json")
    print(f"\n{n} clips ({args.reps} x the smartwatch set), {runs[0]['shards']} shards of "
          f"{args.shard_size}, {os.cpu_count()} cores\n")
    print("| engine | workers | wall s | ray start s | clips/s (excl. start) | identical |")
    print("|---|---:|---:|---:|---:|---|")
    for r in runs:
        print(f"| {r['engine']} | {r['workers']} | {r['wall_s']:.1f} | {r['startup_s']:.1f} | "
              f"{r['clips_per_s']:.0f} | {r['identical_to_local']} |")
    print(f"\nray 2 workers / 1 worker: x{ratios['ray2_over_ray1']:.2f} clips/s; "
          f"ray 1 worker / local: x{ratios['ray1_over_local']:.2f}")
    print(f"wrote {args.json}")
    return 0 if all(r["identical_to_local"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
