"""Human and machine outputs of a run: results.json, a text table, curves.png, report.html."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

ROUTER_ORDER = ("belief", "dmd", "supervised", "max_prob", "entropy", "margin", "random", "oracle")

# one colour per router and reference line, none shared (the benchmark's plot uses them too)
COLOURS = {"belief": "darkviolet", "dmd": "C3", "dmd-mlp": "C1", "dmd-linear": "C4",
           "dmd-gbt": "C5", "dmd-gain": "C6", "dmd-aug": "C8", "dmd-cv": "C9",
           "supervised": "tab:olive", "max_prob": "tab:pink",
           "entropy": "tab:brown", "margin": "tab:cyan", "random": "0.55", "abc": "darkgoldenrod",
           "oracle": "k", "cloud only": "C0", "edge only": "C2"}

GLOSSARY = (
    ("area", "area under the curve of test accuracy against the share of clips offloaded "
     "(0 to 1); higher is better"),
    ("offload to match cloud", "the least share of clips offloaded at which the hybrid is as "
     "accurate as the cloud alone (1.0 in a benchmark's means when never reached)"),
    ("oracle", "a router that knows the true labels and offloads exactly the clips whose "
     "answer the offload fixes: the limit of routing for this model pair"),
)


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
        f"classes: {', '.join(results['classes'])}",
        "",
        f"{'model':<10}{'accuracy':>10}{'macro-F1':>10}{'ms/clip':>10}{'params':>10}"
        f"{'compute vs cloud':>18}",
        f"{'edge':<10}{_pct(e['accuracy']):>10}{_pct(e['macro_f1']):>10}"
        f"{e['latency_ms']:>10.3f}{e['params']:>10}{e['latency_ms'] / c['latency_ms']:>17.2f}x",
        f"{'cloud':<10}{_pct(c['accuracy']):>10}{_pct(c['macro_f1']):>10}"
        f"{c['latency_ms']:>10.3f}{c['params']:>10}{1.0:>17.2f}x",
        f"{'switcher':<10}{'':>10}{'':>10}{s['latency_ms']:>10.3f}{s['params']:>10}",
        f"{'hybrid':<10}{_pct(op['accuracy']):>10}{_pct(op['macro_f1']):>10}{'':>10}{'':>10}"
        f"{op['compute_vs_cloud']:>17.2f}x",
        "",
        f"operating point ({op['mode']}): offload {_pct(op['offload_rate'])} of test clips "
        f"(calibration: {_pct(op['calib_offload_rate'])})",
        "",
        f"{'router':<12}{'area':>10}{'offload to match cloud':>26}",
    ]
    lines += [f"{a:<12}{b:>10}{c_:>26}" for a, b, c_ in summary_rows(results)]
    fu = results.get("fusion")
    if fu:
        lines += ["", f"offloaded clips are answered by fusion of the edge and cloud posteriors "
                  f"(edge weight {fu['weight']:.2f}, fitted on DMD records without labels; "
                  f"fused accuracy at full offload {_pct(fu['answer_accuracy'])}, cloud "
                  f"{_pct(c['accuracy'])})"]
    lines += ["", *[f"{k}: {v}" for k, v in GLOSSARY]]
    sv = results.get("served")
    if sv:
        where = ("over HTTP to a temporary cloud server on 127.0.0.1 (stopped after the "
                 "replay)") if sv["transport"] == "http" else "in process"
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
    """Accuracy and macro-F1 against offload rate, and accuracy against compute per clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4))
    op = results["operating_point"]
    e, c = results["edge"], results["cloud"]
    device = (e["latency_ms"] + results["switcher"]["latency_ms"]) / c["latency_ms"]
    panels = ((axes[0], "curve", "accuracy", "offload"), (axes[1], "f1_curve", "macro-F1",
                                                          "offload"),
              (axes[2], "curve", "accuracy", "compute"))
    for ax, key, label, xaxis in panels:
        for name in ROUTER_ORDER:
            r = results["routers"].get(name)
            if r is None:
                continue
            x, y = (np.asarray(v) for v in zip(*r[key], strict=True))
            if xaxis == "compute":  # every router runs the edge (learned ones the switcher too)
                x = device + x
            ax.plot(x, y, color=COLOURS[name], lw=2.6 if name == op["router"] else 1.3,
                    ls=":" if name == "oracle" else ("--" if name == "supervised" else "-"),
                    label=f"{name} (area {r['auc']:.3f})" if key == "curve" else name)
        ref = "accuracy" if key == "curve" else "macro_f1"
        ax.axhline(c[ref], color=COLOURS["cloud only"], lw=0.9, ls="-.", label="cloud only")
        ax.axhline(e[ref], color=COLOURS["edge only"], lw=0.9, ls="-.", label="edge only")
        x_op = op["offload_rate"] if xaxis == "offload" else op["compute_vs_cloud"]
        ax.plot([x_op], [op[ref]], marker="o", ms=9, mfc="none",
                mec=COLOURS.get(op["router"], "C3"), mew=2, ls="none",
                label=f"operating point ({op['mode']})")
        ax.set_xlabel("share of clips offloaded to the cloud" if xaxis == "offload" else
                      "compute per clip / cloud-only (measured latency)")
        ax.set_ylabel(f"{label} on test")
        ax.set_title(f"{label} vs {'offload' if xaxis == 'offload' else 'compute'}",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    fig.suptitle(f"{results['dataset']}: the hybrid per router")
    return save_figure(fig, path)


def plot_stream(results: dict, path: Path) -> Path:
    """One test stream of the deployed hybrid over time: the true class, the edge's answer,
    the router's own answer (a stream router's belief) and the hybrid's answer, with each
    offloaded clip marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr, classes = results["stream_trace"], results["classes"]
    t = np.asarray(tr["t"], float)
    off = np.asarray(tr["offloaded"], bool)
    fig, ax = plt.subplots(figsize=(14, 1.6 + 0.45 * len(classes)))
    lanes = (("label", "true class", "0.2", 0.0, "s", 36),
             ("edge", "edge", COLOURS["edge only"], -0.24, "|", 30),
             ("belief", "router's own answer", COLOURS["belief"], 0.12, "_", 40),
             ("answer", "hybrid's answer", "C1", 0.24, ".", 30))
    for key, label, colour, dy, marker, size in lanes:
        y = np.asarray(tr[key]) + dy
        ax.scatter(t, y, s=size, marker=marker, color=colour, label=label, lw=1)
    ax.scatter(t[off], np.full(off.sum(), -0.6), marker="^", s=34, color=COLOURS["cloud only"],
               label=f"offloaded ({off.mean():.0%} of {len(off)} clips)")
    right = np.asarray(tr["answer"]) == np.asarray(tr["label"])
    edge_right = np.asarray(tr["edge"]) == np.asarray(tr["label"])
    ax.set_yticks(range(len(classes)), classes)
    ax.set_ylim(-0.9, len(classes) - 0.5)
    ax.set_xlabel("clip start in the stream (s)")
    router = results["operating_point"]["router"]
    ax.set_title(f"stream {tr['stream']}: edge right on {edge_right.mean():.1%} of clips, "
                 f"the hybrid ({router}) on {right.mean():.1%}", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=5)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """A report's figure as PNG (the demo's and the benchmark's), its memory freed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
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
    stream_section = ""
    if "stream_trace" in results and png.with_name("stream.png").exists():
        one = base64.b64encode(png.with_name("stream.png").read_bytes()).decode()
        stream_section = f"""<h2>One test stream, clip by clip</h2>
<img src="data:image/png;base64,{one}" style="width:100%">"""
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
{stream_section}
<ul>{"".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in GLOSSARY)}</ul>
<h2>Routers</h2>
<table><tr><th>router</th><th>area under accuracy-offload curve</th>
<th>least offload reaching cloud accuracy</th></tr>{routers}</table>
{audit_section}
<p>Machine-readable: <code>results.json</code> beside this file.</p>
</body></html>"""
    path.write_text(doc)
    return path


def write_report(data: dict, out_dir: Path, names: tuple[str, str, str], plot, page
                 ) -> tuple[Path, Path, Path]:
    """A run's machine-readable JSON, its plot, and the HTML page that shows both (the demo's
    report and the benchmark's)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / names[0]
    js.write_text(json.dumps(data, indent=1))
    png = plot(data, out_dir / names[1])
    return js, png, page(data, png, out_dir / names[2])


def write_all(results: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = plot_stream(results, out_dir / "stream.png") if "stream_trace" in results else None
    res, png, page = write_report(results, out_dir, ("results.json", "curves.png",
                                                     "report.html"), plot_curves, write_html)
    return {"results": res, "curves": png, "report": page} | ({"stream": stream} if stream
                                                                else {})
