"""The benchmark's outputs: benchmark.json, a text table, benchmark.png and benchmark.html."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from edgeswitch.evaluation.report import COLOURS, save_figure, write_report
from edgeswitch.evaluation.report import GLOSSARY as BASE_GLOSSARY

GLOSSARY = (
    *BASE_GLOSSARY,
    ("oracle gain share", "(area - random's area) / (oracle's area - random's area), for the "
     "same answers"),
    ("+fusion", "offloaded clips are answered by the label-free fusion of the edge's and the "
     "cloud's posteriors instead of the cloud's alone"),
    ("abc", "Agreement-Based Cascading: offload when an ensemble of edge models disagrees "
     "(costs k edge models per clip)"),
)

PLOTTED = ("dmd", "dmd-mlp", "entropy", "margin", "abc", "random", "oracle")


def fmt_ci(m: dict | None, pct: bool = False, digits: int = 4) -> str:
    """'mean [lo, hi]' of a summary figure (percent with `pct`); '-' when there is none."""
    if m is None or m["mean"] is None or not np.isfinite(m["mean"]):
        return "-"
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.{digits}f}")
    return f"{f(m['mean'])} [{f(m['ci'][0])}, {f(m['ci'][1])}]"


def text_table(bench: dict) -> str:
    s = bench["summary"]
    gap = s["cloud_minus_edge"]
    lines = [
        f"benchmark on {bench['dataset']}: {len(bench['folds'])} folds, {bench['n_groups']} "
        f"groups, {bench['n_clips']} clips; mean [95% CI, bootstrap over folds]",
        f"edge accuracy {fmt_ci(s['edge_accuracy'], True)}%, cloud "
        f"{fmt_ci(s['cloud_accuracy'], True)}%, cloud - edge {fmt_ci(gap, True)} points "
        f"(>= 3 points on {gap['folds_at_least_3_points']} of {gap['folds']} folds)",
        f"deployed by demo: {s['default_router']}",
        "",
        f"{'router':<18}{'area':>26}{'offload to match cloud %':>28}{'oracle gain share':>24}"
        f"{'acc@50% - cloud, pts':>24}{'area vs best confidence':>30}{'W/T/L':>9}",
    ]
    for name, r in s["routers"].items():
        vs = s["vs_best_confidence"].get(name)
        diff = fmt_ci(vs["auc_diff"]) if vs else ""
        wtl = f"{vs['wins']}/{vs['ties']}/{vs['losses']}" if vs else ""
        g = r["gain_over_cloud_at_0.5"]
        match = fmt_ci(r["offload_to_match_cloud"], True)
        lines.append(f"{name:<18}{fmt_ci(r['auc']):>26}{match:>28}"
                     f"{fmt_ci(r['oracle_gain_share'], digits=2):>24}{fmt_ci(g, True):>24}"
                     f"{diff:>30}{wtl:>9}")
    lines += ["", *[f"{k}: {v}" for k, v in GLOSSARY]]
    return "\n".join(lines)


def _curves(bench: dict, name: str) -> np.ndarray:
    return np.array([f["routers"][name]["curve"] for f in bench["folds"]])


def plot(bench: dict, path: Path) -> Path:
    """Accuracy minus the fold's cloud-only accuracy, mean over folds with a 95% band (the
    folds differ more in level than routers do, so each fold is drawn against its own cloud)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = bench["folds"]
    n = len(folds)
    cloud = np.array([f["cloud_accuracy"] for f in folds])
    x = np.linspace(0, 1, len(folds[0]["routers"]["random"]["curve"]))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6), sharey=True)
    panels = ((axes[0], "", "offload", "per clip: offloaded clips answered by the cloud"),
              (axes[1], "+fusion", "offload", "... by fusion of edge and cloud; stream routers "
               "(their state's answer)"),
              (axes[2], "+fusion", "compute", "fusion and stream routers, against compute per "
               "clip"))
    # stream routers answer from their state (which holds the cloud's answers): they are
    # drawn beside the fused per-clip routers, the fairest comparison
    stream = tuple(bench["summary"].get("vs_per_clip_default", {}))[:1]
    default = bench["summary"]["default_router"].replace("+fusion", "")

    def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = 1.96 * values.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else 0 * values[0]
        return values.mean(axis=0), half

    unit = bench.get("cost_unit", "macs")
    for ax, suffix, xaxis, title in panels:
        if xaxis == "compute" and unit is None:  # recorded outputs without costs
            ax.text(0.5, 0.5, "no per-clip costs in the outputs file:\nno compute axis",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        for base in dict.fromkeys((default, *PLOTTED, *stream)):
            name = base if base in stream else base + suffix
            if name not in folds[0]["routers"] or (base in stream and not suffix):
                continue
            mean, half = band(100 * (_curves(bench, name) - cloud[:, None]))
            xs = x
            if xaxis == "compute":
                # the oracle has no operating point: it runs the one edge model, as random does
                ref = name if "operating_point" in folds[0]["routers"][name] else "random" + suffix
                ops = [f["routers"][ref].get("operating_point") for f in folds]
                # device-side cost (edge models + router) per clip, in cloud-only units
                device = np.mean([op["compute_vs_cloud"] - op["offload_rate"] for op in ops
                                  if op] or [0.0])
                xs = device + x
            colour = COLOURS.get(base, "C3")
            ax.plot(xs, mean, color=colour, lw=2.6 if base == default else 1.3,
                    ls=":" if base == "oracle" else "-", label=name)
            ax.fill_between(xs, mean - half, mean + half, color=colour, alpha=0.12, lw=0)
        ax.axhline(0, color=COLOURS["cloud only"], lw=1.0, ls="-.", label="cloud only")
        edge = np.array([f["edge_accuracy"] for f in folds])
        m, h = band(100 * (edge - cloud)[:, None])
        ax.axhline(m[0], color=COLOURS["edge only"], lw=1.0, ls="-.", label="edge only")
        ax.axhspan(m[0] - h[0], m[0] + h[0], color=COLOURS["edge only"], alpha=0.08)
        ax.set_title(title, fontsize=10)
        if xaxis == "compute":
            ax.set_xscale("log")
            what = "MACs" if unit == "macs" else "recorded time"
            ax.set_xlabel(f"compute per clip / cloud-only compute ({what}; log scale)")
        else:
            ax.set_xlabel("share of clips offloaded")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    axes[0].set_ylabel("accuracy minus cloud-only, points (mean over folds, 95% band)")
    fig.suptitle(f"{bench['dataset']}: the hybrid against the cloud alone, {n} folds "
                 "(every group tested once)")
    return save_figure(fig, path)


def write_html(bench: dict, png: Path, path: Path) -> Path:
    img = base64.b64encode(png.read_bytes()).decode()
    gloss = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in GLOSSARY)
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(' '.join(f['test_groups']))}</td>"
        f"<td>{100 * f['edge_accuracy']:.1f}%</td><td>{100 * f['cloud_accuracy']:.1f}%</td>"
        f"<td>{f['fusion']['weight']:.2f}</td></tr>" for i, f in enumerate(bench["folds"]))
    doc = f"""<!doctype html><html><head><meta charset="utf-8">
<title>edgeswitch benchmark: {html.escape(bench['dataset'])}</title>
<style>body{{font-family:sans-serif;max-width:1250px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 9px}}
pre{{background:#f6f6f6;padding:1em;font-size:12px;overflow-x:auto}}</style></head><body>
<h1>edgeswitch benchmark: {html.escape(bench['dataset'])}</h1>
<ul>{gloss}</ul>
<pre>{html.escape(text_table(bench))}</pre>
<img src="data:image/png;base64,{img}" style="width:100%">
<h2>Folds</h2>
<table><tr><th>fold</th><th>test groups</th><th>edge</th><th>cloud</th>
<th>fusion edge weight (fitted without labels)</th></tr>{rows}</table>
<p>Classes: {html.escape(', '.join(bench['classes']))}. Machine-readable:
<code>benchmark.json</code> beside this file.</p></body></html>"""
    path.write_text(doc)
    return path


def write_all(bench: dict, out_dir: Path) -> dict[str, Path]:
    js, png, page = write_report(bench, out_dir, ("benchmark.json", "benchmark.png",
                                                  "benchmark.html"), plot, write_html)
    return {"json": js, "png": png, "html": page}
