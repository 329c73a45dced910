"""Where a benchmark writes its figures: stdout always, a file only when asked.

`--json PATH` writes the JSON anywhere; `--save` writes the committed file the docs cite
(benchmarks/results/NAME.json). A plain run writes nothing, so trying a benchmark never changes
the committed figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def output_args(ap: argparse.ArgumentParser, canonical: str) -> None:
    ap.add_argument("--json", default=None, metavar="PATH",
                    help="write the figures (JSON) to PATH (default: no file)")
    ap.add_argument("--save", action="store_true",
                    help=f"write them to benchmarks/results/{canonical}, the committed figures "
                    "the docs cite")


def write_results(args: argparse.Namespace, data: dict, canonical: str) -> list[Path]:
    """The figures to --json and (with --save) to benchmarks/results/`canonical`."""
    paths = ([Path(args.json)] if args.json else []) + ([RESULTS / canonical] if args.save
                                                         else [])
    text = json.dumps(data, indent=1, default=str) + "\n"
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if paths:
        print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return paths
