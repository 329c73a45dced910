"""A deployed bundle for CLI tests: BasicMotions edge and cloud ONNX models, a switcher, an
operating point that offloads about half the clips, and an unlabelled clip file."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_bundle(d: Path, bm_files: dict, basicmotions, n_clips: int = 40) -> dict:
    """Files a device ships (edge, cloud, switcher, op) and `clips.npz` of `n_clips`."""
    from edgeswitch.data import split_by_group
    from edgeswitch.dmd import distill
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.switcher import LinearSwitcher, calibrate_offload

    edge, cloud = OnnxClassifier(bm_files["edge"]), OnnxClassifier(bm_files["cloud"])
    pool = split_by_group(basicmotions, (0.5, 0.2, 0.1, 0.2), seed=0).pool
    rec = distill(edge, cloud, pool)
    rec.to_parquet(d / "dmd.parquet")
    sw = LinearSwitcher().fit(rec.edge, rec.target("soft"), rec.groups)
    sw.save(d / "sw.npz")
    calibrate_offload(sw.trust(rec.edge), 0.5).save(d / "op.json")
    X = np.resize(basicmotions.X, (n_clips, *basicmotions.X.shape[1:])).astype(np.float32)
    ids = np.array([f"c{i:04d}" for i in range(n_clips)])
    np.savez(d / "clips.npz", X=X, ids=ids)
    return {"edge": str(bm_files["edge"]), "cloud": str(bm_files["cloud"]),
            "switcher": str(d / "sw.npz"), "op": str(d / "op.json"),
            "clips": str(d / "clips.npz"), "dmd": str(d / "dmd.parquet"), "X": X, "ids": ids}


def export_bundle(b: dict, bundle: Path, out: Path) -> Path:
    """`make_bundle`'s files as a bundle folder (the names `save_bundle` writes), exported by
    `edgeswitch export-device` to the device artifact folder `out`."""
    import shutil

    bundle.mkdir()
    for src, name in ((b["edge"], "edge.onnx"), (b["switcher"], "switcher.npz"),
                      (b["op"], "operating_point.json")):
        shutil.copy(src, bundle / name)
    r = run_cli("export-device", bundle, "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def classify_args(b: dict, data: str | None = None) -> list[str]:
    return ["classify", "--data", data or b["clips"], "--edge", b["edge"], "--switcher",
            b["switcher"], "--op", b["op"], "--quiet"]


def run_cli(*args, timeout=300, env=None, **kw):
    """`python -m edgeswitch ARGS` as a user runs it (this tree first on the path)."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edgeswitch", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kw)


def jsonl(path) -> list[dict]:
    """Every whole line of a JSON lines file (a line cut by a kill has no newline: skipped)."""
    import json

    text = Path(path).read_text() if Path(path).exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1]]


def log_ids(path) -> list[str]:
    """The clip ids committed to a decision log, read as a reader would after a crash."""
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT clip_id FROM decisions ORDER BY id")]
    finally:
        db.close()
