"""Deployment simulation of `edgeswitch refresh` on the bundled watch data, real models.

1. Build the bundle of the default split (as `edgeswitch demo` does; models from the cache).
2. For each test subject A: replay A's clips through `edgeswitch classify --log A.sqlite
   --shadow-rate R` (the CLI, in this process, the real cloud model in process), then refresh
   from that log (pipeline.refresh: the new switcher is kept whether or not `refresh` would
   write it, and its verdict is recorded).
3. For every other test subject B ("the next subject"): old and new switchers (and, as an
   ablation, the new one trained without the sampling weights) on B's clips,
   accuracy at the same offload rate (the operating point's target; the lowest-scored share of
   B's clips is offloaded and answered as the bundle answers offloads, fusion included).
   B's labels are read here only. Also the area under accuracy against offload rate.

    python benchmarks/refresh.py --out runs/refresh_sim

Prints a table and writes OUT/refresh_sim.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def accuracy_at(scores, edge_ok, answer_ok, rate: float, seed: int = 0) -> float:
    from edgeswitch.evaluation.curves import accuracy_by_k, offload_order

    acc = accuracy_by_k(edge_ok, answer_ok, offload_order(scores, seed))
    return float(acc[int(np.ceil(rate * len(scores) - 1e-9))])


def area(scores, edge_ok, answer_ok, seed: int = 0) -> float:
    from edgeswitch.evaluation.curves import accuracy_by_k, offload_order, trapezoid_auc

    acc = accuracy_by_k(edge_ok, answer_ok, offload_order(scores, seed))
    return trapezoid_auc(np.arange(len(acc)) / len(scores), acc)


def weight_check(clips, bundle, agree_all) -> dict:
    """Edge/answer agreement over the whole stream (every clip, computed here) against its
    estimates from the log's answered clips alone: unweighted, and post-stratified."""
    from edgeswitch.pipeline.logged import stratum_weights
    from edgeswitch.pipeline.refresh import answer_proba

    a = clips.answered
    agree = clips.edge.label[a] == answer_proba(clips, bundle.fusion)[a].argmax(axis=1)
    w = stratum_weights(clips.offloaded, a)[a]
    return {"stream": float(np.mean(agree_all)), "answered_unweighted": float(agree.mean()),
            "answered_weighted": float(np.sum(w * agree) / w.sum()), "answered": int(a.sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/refresh_sim")
    p.add_argument("--shadow-rate", type=float, default=0.3)
    p.add_argument("--cache", default=None, help="model cache (default: edgeswitch's)")
    args = p.parse_args()

    from edgeswitch.benchmark.stats import mean_ci
    from edgeswitch.cli.main import main as cli
    from edgeswitch.config import load_config
    from edgeswitch.errors import EdgeSwitchError
    from edgeswitch.models.cache import default_cache_dir
    from edgeswitch.pipeline import build
    from edgeswitch.pipeline.deploy import save_bundle
    from edgeswitch.pipeline.logged import read_log
    from edgeswitch.pipeline.refresh import Bundle, refresh, train_on_log

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(dataset="watch")
    a = build(cfg, cache_dir=Path(args.cache) if args.cache else default_cache_dir(),
              progress=False)
    bdir = out / "bundle"
    save_bundle(a, bdir)
    bundle = Bundle.load(bdir)
    op = bundle.operating_point
    rate = op.target_rate if op.target_rate is not None else op.calib_offload_rate
    test = a.splits.test
    subjects = sorted(np.unique(test.groups))

    per_subject = {}  # B's model outputs, computed once
    for s in subjects:
        m = test.groups == s
        edge = a.edge.outputs(test.X[m])
        cloud = a.cloud.predict_proba(test.X[m])
        answer = cloud if a.fusion is None else a.fusion.combine(edge.proba, cloud)
        per_subject[s] = {"edge": edge, "y": test.y[m],
                          "edge_ok": edge.label == test.y[m],
                          "answer_ok": answer.argmax(axis=1) == test.y[m],
                          "agree": edge.label == answer.argmax(axis=1)}
        np.savez(out / f"{s}.npz", X=test.X[m], y=test.y[m], groups=test.groups[m],
                 ids=test.ids[m], classes=np.array(test.classes))

    refreshed, refused, pairs, bias = {}, {}, [], {}
    for s in subjects:
        db = out / f"{s}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        code = cli(["classify", "--data", str(out / f"{s}.npz"), "--split", "all",
                    "--edge", str(bdir / "edge.onnx"), "--switcher", str(bdir / "switcher.npz"),
                    "--op", str(bdir / "operating_point.json"), "--cloud",
                    str(bdir / "cloud.onnx"), "--log", str(db), "--shadow-rate",
                    str(args.shadow_rate), "--out", str(out / f"{s}.jsonl"), "--quiet"])
        if code != 0:
            raise SystemExit(f"classify on {s} exited {code}")
        bias[s] = weight_check(read_log(db), bundle, per_subject[s]["agree"])
        try:
            r = refresh(db, bundle, cfg.refresh, cfg.seed)
        except EdgeSwitchError as exc:  # e.g. too few shadow clips: refresh refuses, say so
            print(f"{s}: refresh refused: {exc}", flush=True)
            refused[s] = str(exc)
            continue
        refreshed[s] = r
        # ablation: the same training part, every answered clip weighted 1 (no correction)
        unweighted = train_on_log(read_log(db).split_by_time(cfg.refresh.holdout)[0], bundle,
                                  cfg.seed, weighted=False)
        print(f"{s}: {len(per_subject[s]['y'])} clips; refresh {r.report['criterion']} old "
              f"{r.report[r.report['criterion']]['old']:.4f} new "
              f"{r.report[r.report['criterion']]['new']:.4f} -> "
              f"{'write' if r.better else 'not better'}", flush=True)
        for t in subjects:
            if t == s:
                continue
            b = per_subject[t]
            row = {"stream": s, "next": t, "clips": len(b["y"]), "refresh_writes": r.better}
            for name, sw in (("old", bundle.switcher), ("new", r.switcher),
                             ("new_unweighted", unweighted)):
                sc = sw.trust(b["edge"])
                row[name] = {"accuracy_at_rate": accuracy_at(sc, b["edge_ok"], b["answer_ok"],
                                                             rate, cfg.seed),
                             "area": area(sc, b["edge_ok"], b["answer_ok"], cfg.seed)}
            row["edge_accuracy"] = float(b["edge_ok"].mean())
            row["answer_accuracy"] = float(b["answer_ok"].mean())
            pairs.append(row)

    diff = [r["new"]["accuracy_at_rate"] - r["old"]["accuracy_at_rate"] for r in pairs]
    diff_unw = [r["new_unweighted"]["accuracy_at_rate"] - r["old"]["accuracy_at_rate"]
                for r in pairs]
    diff_area = [r["new"]["area"] - r["old"]["area"] for r in pairs]
    gated = [r["new"]["accuracy_at_rate"] - r["old"]["accuracy_at_rate"] if r["refresh_writes"]
             else 0.0 for r in pairs]
    summary = {
        "shadow_rate": args.shadow_rate, "offload_rate": rate, "pairs": len(pairs),
        "old_accuracy": mean_ci([r["old"]["accuracy_at_rate"] for r in pairs], 2000),
        "new_accuracy": mean_ci([r["new"]["accuracy_at_rate"] for r in pairs], 2000),
        "paired_difference": mean_ci(diff, 2000),
        "wins_ties_losses": [int(np.sum(np.asarray(diff) > 1e-9)),
                             int(np.sum(np.abs(diff) <= 1e-9)),
                             int(np.sum(np.asarray(diff) < -1e-9))],
        "paired_area_difference": mean_ci(diff_area, 2000),
        "unweighted_paired_difference": mean_ci(diff_unw, 2000),
        "gated_difference": mean_ci(gated, 2000),
        "refresh_verdicts": {s: {"better": r.better, "difference": r.report["difference"],
                                 "ci95": r.report["difference_ci95"],
                                 "train_answered": r.report["train"]["answered"]}
                             for s, r in refreshed.items()},
        "refresh_refused": refused,
        "agreement_estimates": bias,
    }
    (out / "refresh_sim.json").write_text(json.dumps({"summary": summary, "pairs": pairs},
                                                     indent=1))
    print(f"\n{'stream':>10} {'next':>10} {'n':>5} {'old acc':>8} {'new acc':>8} {'diff':>7} "
          f"{'old area':>9} {'new area':>9} {'unw acc':>8} refresh")
    for r in pairs:
        print(f"{r['stream']:>10} {r['next']:>10} {r['clips']:5d} "
              f"{r['old']['accuracy_at_rate']:8.4f} {r['new']['accuracy_at_rate']:8.4f} "
              f"{r['new']['accuracy_at_rate'] - r['old']['accuracy_at_rate']:+7.4f} "
              f"{r['old']['area']:9.4f} {r['new']['area']:9.4f} "
              f"{r['new_unweighted']['accuracy_at_rate']:8.4f} "
              f"{'writes' if r['refresh_writes'] else 'refuses'}")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
