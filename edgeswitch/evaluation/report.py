"""Human and machine outputs of a run: results.json, a text table, curves.png, report.html."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

ROUTER_ORDER = ("dmd", "supervised", "max_prob", "entropy", "margin", "random", "oracle")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def summary_rows(results: dict) -> list[list[str]]:
    rows = []
    for name in ROUTER_ORDER:
        r = results["routers"].get(name)
        if r is None:
            continue
        rows.append([name, f"{r['auc']:.4f}", _pct(r["offload_to_match_cloud"])])
    return rows


def text_table(results: dict) -> str:
    e, c, s, op = results["edge"], results["cloud"], results["switcher"], \
        results["operating_point"]
    lines = [
        f"data set {results['dataset']}: {results['n_test']} test clips, "
        f"{len(results['classes'])} classes",
        "",
        f"{'model':<10}{'accuracy':>10}{'macro-F1':>10}{'ms/clip':>10}{'params':>10}",
        f"{'edge':<10}{_pct(e['accuracy']):>10}{_pct(e['macro_f1']):>10}"
        f"{e['latency_ms']:>10.3f}{e['params']:>10}",
        f"{'cloud':<10}{_pct(c['accuracy']):>10}{_pct(c['macro_f1']):>10}"
        f"{c['latency_ms']:>10.3f}{c['params']:>10}",
        f"{'switcher':<10}{'':>10}{'':>10}{s['latency_ms']:>10.3f}{s['params']:>10}",
        f"{'hybrid':<10}{_pct(op['accuracy']):>10}{_pct(op['macro_f1']):>10}"
        f"{op['compute_vs_cloud']:>9.2f}x{'':>10}  (compute vs cloud-only)",
        "",
        f"operating point ({op['mode']}): offload {_pct(op['offload_rate'])} of test clips "
        f"(calibration: {_pct(op['calib_offload_rate'])})",
        "",
        f"{'router':<12}{'area':>10}{'offload to match cloud':>26}",
    ]
    lines += [f"{a:<12}{b:>10}{c_:>26}" for a, b, c_ in summary_rows(results)]
    sv = results.get("served")
    if sv:
        where = f"over HTTP ({sv['url']})" if sv["transport"] == "http" else "in process"
        lat = sv["call_latency_ms"]
        lines += ["", f"deployed run {where}, one clip per call: accuracy "
                  f"{_pct(sv.get('accuracy'))}, offload {_pct(sv['offload_rate'])}, "
                  f"fallbacks {sv['fallbacks']}, latency p50 {lat['p50']:.2f} ms / p99 "
                  f"{lat['p99']:.2f} ms"]
        if "agrees_with_in_process" in sv:
            lines.append(f"  answers equal to the in-process hybrid: "
                         f"{_pct(sv['agrees_with_in_process'])}; decision log "
                         f"{sv['decision_log']}")
    return "\n".join(lines)


def plot_curves(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    styles = {"dmd": dict(lw=2.6, color="C3"), "supervised": dict(lw=1.6, color="C1", ls="--"),
              "oracle": dict(lw=1.4, color="k", ls=":"), "random": dict(lw=1.2, color="0.6")}
    for ax, key, label in ((axes[0], "curve", "accuracy"), (axes[1], "f1_curve", "macro-F1")):
        for name in ROUTER_ORDER:
            r = results["routers"].get(name)
            if r is None:
                continue
            x, y = zip(*r[key], strict=True)
            ax.plot(x, y, label=f"{name} (area {r['auc']:.3f})" if key == "curve" else name,
                    **styles.get(name, dict(lw=1.3)))
        ref = "accuracy" if key == "curve" else "macro_f1"
        ax.axhline(results["cloud"][ref], color="C0", lw=0.8, ls="-.", label="cloud only")
        ax.axhline(results["edge"][ref], color="C2", lw=0.8, ls="-.", label="edge only")
        op = results["operating_point"]
        ax.plot([op["offload_rate"]], [op[ref]], marker="o", ms=9, mfc="none", mec="C3",
                mew=2, ls="none", label=f"operating point ({op['mode']})")
        ax.set_xlabel("share of clips offloaded to the cloud")
        ax.set_ylabel(f"{label} on test")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{results['dataset']}: hybrid {axes[0].get_ylabel()} vs offload, per router")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_html(results: dict, png: Path, path: Path) -> Path:
    img = base64.b64encode(png.read_bytes()).decode()
    audit_section = ""
    if "dmd" in results:  # the demo audits DMD targets against the pool's hidden labels
        audit = results["dmd"]["audit"]["per_true_class"]
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v['n']}</td><td>{_pct(v['agreement'])}</td>"
            f"<td>{_pct(v['edge_accuracy'])}</td><td>{_pct(v['cloud_accuracy'])}</td></tr>"
            for k, v in audit.items())
        audit_section = f"""<h2>DMD label-noise diagnostic (pool clips; labels used only for
this audit)</h2>
<p>DMD targets differ from "edge is correct" on
{_pct(results['dmd']['audit']['dmd_label_noise'])} of pool clips.</p>
<table><tr><th>true class</th><th>clips</th><th>edge/cloud agreement</th>
<th>edge accuracy</th><th>cloud accuracy</th></tr>{rows}</table>"""
    routers = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>"
                      for a, b, c in summary_rows(results))
    doc = f"""<!doctype html><html><head><meta charset="utf-8">
<title>edgeswitch report: {html.escape(results['dataset'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;
text-align:right}}td:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:1em}}</style>
</head><body>
<h1>edgeswitch: {html.escape(results['dataset'])}</h1>
<pre>{html.escape(text_table(results))}</pre>
<img src="data:image/png;base64,{img}" style="width:100%">
<h2>Routers</h2>
<table><tr><th>router</th><th>area under accuracy-offload curve</th>
<th>least offload reaching cloud accuracy</th></tr>{routers}</table>
{audit_section}
<p>Machine-readable: <code>results.json</code> beside this file.</p>
</body></html>"""
    path.write_text(doc)
    return path


def write_all(results: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    res = out_dir / "results.json"
    res.write_text(json.dumps(results, indent=1))
    png = plot_curves(results, out_dir / "curves.png")
    page = write_html(results, png, out_dir / "report.html")
    return {"results": res, "curves": png, "report": page}
