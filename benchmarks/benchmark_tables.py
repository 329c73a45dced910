"""Markdown tables of a benchmark run, as docs/results.md and the README show them.

    edgeswitch benchmark --dataset watch --out runs/benchmark
    python benchmarks/benchmark_tables.py runs/benchmark/benchmark.json
"""

from __future__ import annotations

import argparse
import json

from edgeswitch.benchmark.report import fmt_ci

ci = fmt_ci


def routers_table(bench: dict, names: list[str] | None = None) -> str:
    s = bench["summary"]
    rows = ["| router | area | offload to match cloud (%) | oracle gain share | "
            "acc. at 50% minus cloud (points) | area minus best confidence | W/T/L |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name in names or list(s["routers"]):
        r = s["routers"][name]
        vs = s["vs_best_confidence"].get(name)
        wtl = f"{vs['wins']}/{vs['ties']}/{vs['losses']}" if vs else ""
        rows.append(f"| {name} | {ci(r['auc'])} | {ci(r['offload_to_match_cloud'], True)} | "
                    f"{ci(r['oracle_gain_share'], digits=2)} | "
                    f"{ci(r['gain_over_cloud_at_0.5'], True)} | "
                    f"{ci(vs['auc_diff']) if vs else ''} | "
                    f"{wtl} |")
    return "\n".join(rows)


def folds_table(bench: dict, names: list[str]) -> str:
    head = "| fold | test groups | edge | cloud | fusion weight | " + " | ".join(
        f"{n} area" for n in names) + " |"
    rows = [head, "|" + "---|" * 2 + "---:|" * (3 + len(names))]
    for i, f in enumerate(bench["folds"]):
        areas = " | ".join(f"{f['routers'][n]['auc']:.4f}" for n in names)
        rows.append(f"| {i} | {' '.join(f['test_groups'])} | {100 * f['edge_accuracy']:.1f}% | "
                    f"{100 * f['cloud_accuracy']:.1f}% | {f['fusion']['weight']:.2f} | {areas} |")
    return "\n".join(rows)


def operating_table(bench: dict, names: list[str]) -> str:
    rows = ["| router | accuracy at the operating point (%) | offload (%) | compute vs cloud |",
            "|---|---:|---:|---:|"]
    for n in names:
        r = bench["summary"]["routers"][n]
        rows.append(f"| {n} | {ci(r['accuracy_at_operating_point'], True)} | "
                    f"{ci(r['offload_at_operating_point'], True)} | "
                    f"{ci(r['compute_vs_cloud'], digits=2)} |")
    return "\n".join(rows)


PAIRS = (  # (what, new, what it replaces)
    ("fusion on offload (DMD switcher)", "dmd+fusion", "dmd"),
    ("fusion on offload (margin)", "margin+fusion", "margin"),
    ("fusion on offload (ABC)", "abc+fusion", "abc"),
    ("linear instead of the paper's MLP", "dmd-linear+fusion", "dmd-mlp+fusion"),
    ("trees instead of the MLP", "dmd-gbt+fusion", "dmd-mlp+fusion"),
    ("gain target instead of hard (linear)", "dmd-gain+fusion", "dmd-linear+fusion"),
    ("8 rotated views in DMD (MLP)", "dmd-aug+fusion", "dmd-mlp+fusion"),
    ("selection by group CV on DMD instead of fixed linear", "dmd-cv+fusion",
     "dmd-linear+fusion"),
    ("DMD switcher reading the ABC ensemble instead of ABC", "dmd-abc+fusion", "abc+fusion"),
    ("DMD (label-free) instead of the pool's true labels", "dmd+fusion", "supervised+fusion"),
)


def pairs_table(bench: dict) -> str:
    from edgeswitch.benchmark.stats import mean_ci

    rows = ["| change | new | replaces | area difference [95% CI] | W/L |",
            "|---|---|---|---:|---:|"]
    for what, new, old in PAIRS:
        d = [f["routers"][new]["auc"] - f["routers"][old]["auc"] for f in bench["folds"]]
        m = mean_ci(d, 2000)
        w, lo = sum(x > 1e-4 for x in d), sum(x < -1e-4 for x in d)
        rows.append(f"| {what} | {new} | {old} | {ci(m)} | {w}/{lo} |")
    return "\n".join(rows)


def streams_table(bench: dict) -> str:
    """Each stream router against the best per-clip router with the same answers (paired over
    folds), beside its shuffled control (the same streams with their clips in random order)."""
    s = bench["summary"]
    vs, shuffled = s.get("vs_per_clip_default", {}), s.get("shuffled_control", {})
    rows = ["| router | area | offload to match cloud (%) | acc. at 10% minus cloud | "
            "acc. at 20% minus cloud | area minus per-clip default | W/T/L | shuffled: area "
            "minus per-clip |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in vs.items():
        r = s["routers"][name]
        sh = shuffled.get(name, {}).get("auc_diff_vs_per_clip")
        rows.append(f"| {name} | {ci(r['auc'])} | {ci(r['offload_to_match_cloud'], True)} | "
                    f"{ci(r['gain_over_cloud_at_0.1'], True)} | "
                    f"{ci(r['gain_over_cloud_at_0.2'], True)} | {ci(v['auc_diff'])} | "
                    f"{v['wins']}/{v['ties']}/{v['losses']} | {ci(sh) if sh else ''} |")
    if vs:
        ref = next(iter(vs.values()))["reference"]
        r = s["routers"][ref]
        rows.append(f"| {ref} (per-clip default) | {ci(r['auc'])} | "
                    f"{ci(r['offload_to_match_cloud'], True)} | "
                    f"{ci(r['gain_over_cloud_at_0.1'], True)} | "
                    f"{ci(r['gain_over_cloud_at_0.2'], True)} | | | |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", help="benchmark.json")
    p.add_argument("--routers", nargs="*", default=None, help="rows of the main table")
    args = p.parse_args()
    bench = json.loads(open(args.bench).read())
    s = bench["summary"]
    print(f"{bench['dataset']}: {len(bench['folds'])} folds; edge {ci(s['edge_accuracy'], True)}%"
          f", cloud {ci(s['cloud_accuracy'], True)}%, cloud - edge "
          f"{ci(s['cloud_minus_edge'], True)} points, >= 3 points on "
          f"{s['cloud_minus_edge']['folds_at_least_3_points']} of {len(bench['folds'])} folds; "
          f"default router {s['default_router']}\n")
    print(routers_table(bench, args.routers))
    print()
    if s.get("vs_per_clip_default"):
        print(f"streams: {s['streams']}")
        print(streams_table(bench))
        print()
    default = s["default_router"]
    base = default.replace("+fusion", "")
    print(folds_table(bench, [base, default, "entropy+fusion", "margin+fusion", "abc+fusion"]))
    print()
    print(pairs_table(bench))
    print()
    print(operating_table(bench, [n for n in (base, default, "entropy", "entropy+fusion",
                                              "margin+fusion", "abc+fusion") if n in s["routers"]]))


if __name__ == "__main__":
    main()
