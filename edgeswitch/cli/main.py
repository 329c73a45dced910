"""`edgeswitch`: command-line entry point. Each subcommand lives in its own small function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeswitch.errors import EdgeSwitchError
from edgeswitch.extras import MissingExtra, missing_extra, require_extra

DESCRIPTION = """\
Hybrid edge-cloud action classification with a switcher trained by Dual-Model Distillation.

Start with `edgeswitch demo`: it trains an edge and a cloud model on the bundled smartwatch
exercise data, builds unsupervised switcher targets from their agreement (DMD), trains and
calibrates the switcher, and evaluates it against baseline routers on held-out subjects.
`edgeswitch benchmark` does the same on every fold of subjects (each tested once) and gives
the figures to trust: means with confidence intervals and paired differences per router.
The other subcommands run one step each on your own models and data.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_demo(args: argparse.Namespace) -> int:
    from edgeswitch.cli.common import model_cache
    from edgeswitch.cli.flags import resolve_config
    from edgeswitch.evaluation.report import text_table, write_all
    from edgeswitch.pipeline import run_method

    cfg = resolve_config(args)
    out = Path(args.out)
    cache = model_cache(args)
    if not args.in_process:
        from edgeswitch.extras import need_extra

        for module in ("fastapi", "uvicorn", "httpx"):
            need_extra(module, "serve")
    results = run_method(cfg, out_dir=out, cache_dir=cache, progress=not args.quiet,
                         serve="in-process" if args.in_process else "http")
    paths = write_all(results, out)
    print(text_table(results))
    from edgeswitch.switcher.calibrate import OperatingPoint, certification_warning

    warning = certification_warning(OperatingPoint.from_dict(results["operating_point"]))
    if warning:
        print(f"\n{warning}", file=sys.stderr)
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from edgeswitch.cli.common import run_args
    from edgeswitch.cli.flags import config_flags

    parser = argparse.ArgumentParser(prog="edgeswitch", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error (or set "
                        "EDGESWITCH_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo", help="the whole method on a data set, with a report",
        description="Train edge and cloud models, generate DMD data on the unlabelled pool, "
        "train and calibrate the switcher, and evaluate every router on the test subjects. "
        "Then deploy the result: start the cloud server on a free 127.0.0.1 port and replay the "
        "test clips through the edge runtime over HTTP, one clip per call, logging every "
        "decision. Writes OUT/results.json, OUT/curves.png, OUT/report.html, "
        "OUT/dmd_pool.parquet, OUT/decisions.sqlite and the deployable bundle (edge.onnx, "
        "cloud.onnx, switcher.npz, operating_point.json). Trained models are cached, so a "
        "second run does not retrain.")
    run_args(p, "runs/demo")
    config_flags(p, "calibration", only=("mode",))
    p.add_argument("--in-process", action="store_true",
                   help="replay the test clips with the cloud model in this process instead of "
                   "through `serve-cloud` over HTTP on 127.0.0.1")
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    from edgeswitch.cli import benchmark, dashboard, page, refresh, serve, steps, tokens, video

    benchmark.add_parsers(sub, _add_common)
    steps.add_parsers(sub, _add_common)
    serve.add_parsers(sub, _add_common)
    video.add_parsers(sub, _add_common)
    tokens.add_parsers(sub, _add_common)
    refresh.add_parsers(sub, _add_common)
    dashboard.add_parsers(sub, _add_common)
    __import__("edgeswitch.cli.device").cli.device.add_parsers(sub, _add_common)
    page.add_parsers(sub, _add_common)  # device-page
    return parser


DEBUG_ENV = "EDGESWITCH_DEBUG"  # set to 1 (or pass --debug) for the traceback of a crash
# commands that always train, or read or write DMD Parquet: checked before any work starts. The
# others (calibrate, evaluate, ...) need an extra only for some inputs (a bundled data set, a
# Parquet file): a missing package is then reported where it is first imported (main below).
COMMAND_EXTRAS = {"demo": ("train",), "benchmark": ("train",), "train-models": ("train",),
                  "train-switcher": ("train",), "distill": ("train",), "train-pose": ("train",),
                  "refresh": ("train",)}


def main(argv: list[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        for extra in COMMAND_EXTRAS.get(args.command, ()):
            require_extra(extra)
        return args.func(args)
    except MissingExtra as exc:
        print(exc.message(f"edgeswitch {args.command}"), file=sys.stderr)
        return 2
    except EdgeSwitchError as exc:
        print(f"edgeswitch: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written: its name and why
        print(f"edgeswitch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeswitch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug or a case no check covers: one line
        # an optional package missing where it is first imported: the extra that brings it
        missing = missing_extra(exc) if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and not debug:
            print(missing.message(f"edgeswitch {args.command}"), file=sys.stderr)
            return 2
        if debug:
            raise
        what = str(exc).splitlines()[0][:300] if str(exc) else "no message"
        print(f"edgeswitch: error: unexpected {type(exc).__name__} in `{args.command}`: {what} "
              f"(a bug or an input no check covers; run with --debug or {DEBUG_ENV}=1 for the "
              "traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
