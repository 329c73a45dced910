"""`edgeswitch refresh`: a new switcher and operating point from a deployment's decision log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeswitch.cli.flags import config_arg, config_flags, resolve_config

EXIT_WRITTEN, EXIT_NOT_BETTER = 0, 1


def cmd_refresh(args) -> int:
    from edgeswitch.pipeline.refresh import Bundle, refresh, write_bundle

    cfg = resolve_config(args)
    bundle = Bundle.load(args.bundle)
    result = refresh(args.log, bundle, cfg.refresh, cfg.seed)
    r = result.report
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r, indent=1))
    print(json.dumps(r, indent=1))
    which = r[r["criterion"]]
    ci = r["difference_ci95"]
    line = (f"refresh: {r['criterion']} on {r['clips']['held_back']} held-back clips "
            f"({r['clips']['answered']} answered): old {which['old']:.4f}, new "
            f"{which['new']:.4f}, difference {r['difference']:+.4f}"
            + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "") + f", margin {r['margin']}")
    if not result.better:
        print(f"{line}; the new switcher is not better: nothing written (exit "
              f"{EXIT_NOT_BETTER})", file=sys.stderr)
        return EXIT_NOT_BETTER
    out = write_bundle(result, bundle, args.out)
    print(f"{line}; wrote the refreshed bundle to {out}", file=sys.stderr)
    return EXIT_WRITTEN


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "refresh", help="retrain the switcher from a decision log's cloud answers",
        description="Train a new switcher (the bundle's family, target and features) and "
        "recalibrate its operating point from the cloud answers in a decision log. Offloaded "
        "clips are the ones the switcher doubted and shadow clips (classify --shadow-rate) a "
        "random share of the kept ones: each answered clip is weighted by its stratum's "
        "logged clips over its answered ones (offloaded ~1, shadow ~1/rate), so the sample "
        "stands for the whole stream. The latest --holdout share of the log is held back; old "
        "and new are compared on it without labels (--criterion auroc: does the score rank "
        "edge/cloud agreement; agreement: the hybrid's agreement with the answer at the "
        "operating point's offload rate), with the same weights. NEWDIR (a copy of the bundle "
        "with the new switcher.npz, operating_point.json and refresh.json) is written only "
        "when new beats old by more than --margin. The report (JSON) goes to stdout. Exit "
        "codes: 0 written; 1 not better, nothing written; 2 an error (a log without shadow "
        "clips, another edge model, a disagreement operating point...).")
    p.add_argument("--log", required=True, help="decision log (.sqlite) of this bundle's edge")
    p.add_argument("--bundle", required=True,
                   help="deployed bundle folder (edge.onnx, switcher.npz, operating_point.json, "
                   "fusion.json, cloud.onnx)")
    p.add_argument("--out", required=True, help="new bundle folder (must not exist, or be empty)")
    p.add_argument("--report", default=None, help="also write the JSON report to this file")
    config_arg(p)
    config_flags(p, "refresh")
    config_flags(p, "", only=("seed",))
    add_common(p)
    p.set_defaults(func=cmd_refresh)
