"""Subcommands that run one step of the method on a user's own models and data.

train-models -> distill -> train-switcher -> calibrate -> evaluate; `demo` runs all of them.
Data arguments accept anything `load_dataset` does (watch, basicmotions, .npz, .ts, .arff).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeswitch.cli.common import (
    check_router_op,
    data_args,
    fusion_arg,
    load_checked_switcher,
    load_fusion,
    load_models,
    load_router,
    load_split,
    out_file,
    router_arg,
)
from edgeswitch.cli.flags import config_arg, config_flags, resolve_config
from edgeswitch.errors import EdgeSwitchError


def cmd_train_models(args) -> int:
    from edgeswitch.pipeline import train_models

    train, splits, cfg = load_split(args)
    edge, cloud = train_models(cfg, train, None, progress=not args.quiet)
    out = Path(args.out)
    edge.save(out / "edge.onnx")
    cloud.save(out / "cloud.onnx")
    if splits is not None:
        (out / "splits.json").write_text(json.dumps(splits.groups(), indent=1))
    print(f"wrote {out / 'edge.onnx'} ({edge.n_params_} params) and {out / 'cloud.onnx'} "
          f"({cloud.n_params_} params)")
    return 0


def records_config(args):
    """(the DMD records of --dmd, the step's config): without --data, the preset is that of
    the data set the records came from (`distill --data` names it in them)."""
    from edgeswitch.dmd import DMDRecords

    resolve_config(args)  # a bad setting is named before any file is read
    records = DMDRecords.from_parquet(args.dmd)
    if not records.dataset and not getattr(args, "data", None):
        import sys

        print(f"edgeswitch: {args.dmd}: the records do not name their data set (written by an "
              "older version, or exported from a decision log): defaults from the preset of "
              "--config's data set (watch if it names none)", file=sys.stderr)
    return records, resolve_config(args, dataset=records.dataset or None)


def cmd_train_switcher(args) -> int:
    from edgeswitch.pipeline import fit_fusion, fit_router, train_switcher

    records, cfg = records_config(args)
    sc = cfg.switcher
    fusion = fit_fusion(cfg, records)
    sw = train_switcher(records, cfg, fusion=fusion)
    out = out_file(args.out)
    sw.save(out)
    note = ""
    if fusion is not None:
        fpath = fusion.save(Path(args.fusion_out) if args.fusion_out else
                            out.with_name("fusion.json"))
        note = f"; fusion edge weight {fusion.weight:.2f} (fitted without labels) -> {fpath}"
    router = fit_router(cfg, records, sw, fusion, records.classes)
    rpath = Path(args.router_out) if args.router_out else out.with_name("router.json")
    if router.stateful:
        router.save(rpath, records.classes)
        note += (f"; belief router (switch {router.switch[0]:g}, edge weight "
                 f"{router.edge_weight:g}, cloud weight {router.cloud_weight:g}, fitted on "
                 f"{len(records.stream_lists())} unlabelled streams) -> {rpath}")
    else:
        rpath.unlink(missing_ok=True)  # the bundle routes each clip with this switcher
    print(f"switcher: {sc.family}, target {sc.target}, {sw.n_params} params, {sw.macs} MACs/clip, "
          f"{len(records)} DMD records; wrote {out}{note}")
    return 0


def _note_no_input_statistics() -> None:
    import sys

    print("edgeswitch: calibrate --dmd: the drift reference has no input statistics (the "
          "records hold no raw clips); a turned sensor goes unnoticed", file=sys.stderr)


def _calibration_inputs(args, cfg, records):
    """(switcher, scores, disagreement or None, costs, (edge labels, classes, clips, ids))
    from clips and models, or from the DMD records of unlabelled calibration clips (--dmd: any
    modality, no model run needed, no clips: `records`). The edge labels and the clips (their
    input statistics) go into the drift reference."""
    from edgeswitch.pipeline import Costs, check_clip_classes, measure_costs

    no_costs = Costs(0, 0, 1, 0, 0, 1)
    mode = cfg.calibration.mode
    if records is not None:
        from edgeswitch.switcher import load_switcher

        if mode == "budget":
            raise EdgeSwitchError("budget mode times the models on clips; with --dmd use "
                                  "offload or disagreement")
        sw = load_switcher(args.switcher)
        expected = sw.meta.get("edge_model")
        if expected and expected != records.edge_model:
            raise EdgeSwitchError(f"switcher was trained on outputs of {expected}, the "
                                  f"records are from {records.edge_model}")
        _note_no_input_statistics()
        return sw, sw.trust(records.edge), records.edge_label != records.cloud_label, no_costs, \
            (records.edge_label, len(records.classes), None, None)
    if not (args.data and args.edge):
        raise EdgeSwitchError("calibrate needs --data and --edge (or --dmd records)")
    clips, _, _ = load_split(args)
    edge, cloud = load_models(args, cloud_needed=mode in ("budget", "disagreement"))
    check_clip_classes(clips, edge)
    sw = load_checked_switcher(args.switcher, edge)
    edge_out = edge.outputs(clips.X)
    disagree = edge_out.label != cloud.predict(clips.X) if mode == "disagreement" else None
    costs = measure_costs(edge, sw, cloud, clips.X, cfg.latency_calls) if mode == "budget" \
        else no_costs
    return sw, sw.trust(edge_out), disagree, costs, \
        (edge_out.label, len(edge.classes_), clips.X, clips.ids)


def _calibrate_stream_router(args, cfg, records, router):
    """A stream router's operating point: run over the calibration streams (clips with the
    edge and cloud models, or --dmd records of them) with the cloud answering what it
    offloads."""
    from edgeswitch.pipeline import Costs, calibrate_router, check_clip_classes, measure_costs

    fusion = load_fusion(args)
    if records is not None:
        from edgeswitch.switcher.calibrate import calibrate_stream

        c = cfg.calibration
        if c.mode != "offload":
            raise EdgeSwitchError("a stream router from --dmd records calibrates in offload "
                                  "mode only (budget times the models on clips)")
        answer = records.cloud_proba if fusion is None else \
            fusion.combine(records.edge_proba, records.cloud_proba)
        op, scores = calibrate_stream(router, records.edge, records.cloud_proba, answer,
                                      records.stream_lists(), c.rate, c.adaptive, c.step)
        from edgeswitch.runtime.drift import reference

        _note_no_input_statistics()
        ref = reference(scores, records.edge_label, len(records.classes), None)
        return replace(op, reference=ref), len(scores)
    if not (args.data and args.edge and args.cloud):
        raise EdgeSwitchError("calibrating a stream router runs it with the cloud answering: "
                              "give --data, --edge and --cloud (or --dmd records)")
    clips, _, _ = load_split(args)
    edge, cloud = load_models(args)
    check_clip_classes(clips, edge)
    costs = measure_costs(edge, router, cloud, clips.X, cfg.latency_calls) \
        if cfg.calibration.mode == "budget" else Costs(0, 0, 1, 0, 0, 1)
    pool = np.linspace(0, 1, 1001)
    return calibrate_router(cfg, router, edge, cloud, fusion, clips, costs, pool), len(clips)


def cmd_calibrate(args) -> int:
    from edgeswitch.pipeline import calibrate

    records, cfg = records_config(args) if args.dmd else (None, resolve_config(args))
    router = load_router(args, None, records.classes if records is not None else
                         _model_classes(args))
    if router.stateful:
        op, n = _calibrate_stream_router(args, cfg, records, router)
        op.save(out_file(args.out))
        print(f"{op.mode}: threshold {op.threshold:.4f} on the {router.name} router's trust, "
              f"offloads {op.calib_offload_rate:.1%} of {n} calibration clips (run as streams "
              f"with the cloud answering); wrote {args.out}")
        return 0
    sw, scores, disagree, costs, (edge_labels, n_classes, X, ids) = \
        _calibration_inputs(args, cfg, records)
    if cfg.calibration.mode != "disagreement":
        disagree = None
    # without DMD records at hand the candidate thresholds are fixed in advance: a fine grid
    grid_source = np.linspace(0, 1, 1001)
    op = calibrate(cfg, scores, disagree, grid_source, costs, edge_labels, n_classes, X, ids)
    op.save(out_file(args.out))
    print(f"{op.mode}: threshold {op.threshold:.4f}, offloads {op.calib_offload_rate:.1%} "
          f"of {len(scores)} calibration clips; wrote {args.out}")
    from edgeswitch.switcher.calibrate import certification_warning

    warning = certification_warning(op)
    if warning:
        import sys

        print(warning, file=sys.stderr)
    return 0


def _model_classes(args) -> tuple[str, ...] | None:
    """The edge model's classes (a router file names the classes it was fitted for)."""
    if not getattr(args, "edge", None):
        return None
    from edgeswitch.models import OnnxClassifier

    return tuple(OnnxClassifier(args.edge).classes_)


def cmd_evaluate(args) -> int:
    from edgeswitch.evaluation.report import text_table, write_all
    from edgeswitch.pipeline import evaluate_clips, measure_costs
    from edgeswitch.switcher import OperatingPoint

    clips, _, cfg = load_split(args)
    edge, cloud = load_models(args)
    sw = load_checked_switcher(args.switcher, edge)
    router = load_router(args, edge)
    op = OperatingPoint.load(args.op)
    check_router_op(router, op, args.op)
    costs = measure_costs(edge, router, cloud, clips.X, cfg.latency_calls)
    results = {"dataset": str(args.data),
               **evaluate_clips(edge, cloud, {"dmd": sw}, op, costs, clips, cfg.curve_points,
                                cfg.seed, fusion=load_fusion(args), router=router)}
    write_all(results, Path(args.out))
    print(text_table(results))
    return 0


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser("train-models", help="train edge and cloud models, export ONNX",
                       description="Train the edge and cloud networks on the train split "
                       "(or --split all) and write OUT/edge.onnx and OUT/cloud.onnx.")
    data_args(p, "train")
    p.add_argument("--out", default="models", help="output folder (default: models)")
    add_common(p)
    p.set_defaults(func=cmd_train_models)

    from edgeswitch.cli import distill

    distill.add_parser(sub, add_common)

    p = sub.add_parser("train-switcher", help="train the switcher on DMD records",
                       description="Train the switcher on DMD targets, relative to the answer "
                       "an offloaded clip gets (the cloud's, or the fusion's): 'hard' "
                       "(agreement), 'soft' (the answer's probability of the edge's class) or "
                       "'gain' (one minus the expected gain of offloading). With fusion on, "
                       "also fits the fusion on the records (no labels) and writes fusion.json "
                       "beside the switcher. Defaults: the preset of the data set the records "
                       "came from (distill --data names it in them), then the config's "
                       "[switcher] and [fusion] tables (configs/watch.toml), then the flags. "
                       "Records of streams (distill on data that names them) also fit the "
                       "belief router of [stream] on them, without labels, and write "
                       "router.json beside the switcher: what classify, watch, calibrate and "
                       "evaluate then route with.")
    p.add_argument("--dmd", required=True, help="DMD records (.parquet file or sharded folder)")
    config_arg(p)
    config_flags(p, "switcher")
    config_flags(p, "fusion", prefix="fusion-")
    config_flags(p, "stream", only=("router", "answers", "fit", "switch", "edge_weight",
                                    "cloud_weight", "alarm"), prefix="stream-")
    config_flags(p, "", only=("seed",))
    p.add_argument("--fusion-out", default=None, help="fusion file (default: beside --out)")
    p.add_argument("--router-out", default=None, help="router file (default: router.json "
                   "beside --out)")
    p.add_argument("--out", default="switcher.npz")
    add_common(p)
    p.set_defaults(func=cmd_train_switcher)

    p = sub.add_parser("calibrate", help="choose the switcher threshold on unlabelled clips",
                       description="Pick the offload threshold on unlabelled calibration "
                       "clips: --mode offload (target share offloaded), budget (cost per clip "
                       "as a fraction of cloud-only, from measured latencies) or disagreement "
                       "(edge/cloud disagreement among kept clips <= epsilon with probability "
                       ">= 1 - delta; Clopper-Pearson with Bonferroni over the grid). The "
                       "operating point also carries the clips' drift reference (score quantiles, "
                       "edge class mix), which `classify` and `watch` test the live stream "
                       "against. With a stream router (router.json beside --switcher, or "
                       "--router) the router is run over the calibration streams with the "
                       "cloud answering what it offloads (needs --cloud, or --dmd records).")
    data_args(p, "calib", required=False)
    p.add_argument("--edge", default=None, help="edge model (.onnx); not with --dmd")
    p.add_argument("--dmd", default=None,
                   help="or: DMD records of unlabelled calibration clips (any modality, e.g. "
                   "from `distill --data VIDEOS`); offload and disagreement modes")
    p.add_argument("--switcher", required=True)
    router_arg(p)
    fusion_arg(p)
    p.add_argument("--cloud", default=None, help="needed for budget and disagreement modes, "
                   "and for a stream router")
    config_flags(p, "calibration")
    p.add_argument("--out", default="operating_point.json")
    add_common(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("evaluate", help="curves and operating point on labelled clips",
                       description="Evaluate the switcher and the baseline routers on labelled "
                       "clips: accuracy and macro-F1 against offload rate, areas, offload to "
                       "match the cloud, and the hybrid at the operating point.")
    data_args(p, "test")
    p.add_argument("--edge", required=True)
    p.add_argument("--cloud", required=True)
    p.add_argument("--switcher", required=True)
    router_arg(p)
    p.add_argument("--op", required=True, help="operating point JSON from `calibrate`")
    fusion_arg(p)
    p.add_argument("--out", default="evaluation")
    add_common(p)
    p.set_defaults(func=cmd_evaluate)
