"""Helpers the subcommands share: optional extras, config sections, runtime flags."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from edgeswitch.errors import EdgeSwitchError


def need_extra(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise EdgeSwitchError(f"this needs the '{extra}' extra: pip install -e \".[{extra}]\"")


def config_section(args, name: str):
    """The config's [serve], [runtime] or [distill] table, then any flag given on the command
    line (flags default to None, so a flag left out keeps the file's value)."""
    from edgeswitch import config

    section = getattr(config.load_config(args.config), name)
    for f in fields(section):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(section, f.name, value)
    return getattr(config, f"validate_{name}")(section)


def runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=["native", "openai"], default=None,
                   help="native /v1/classify (default) or OpenAI chat completions")
    p.add_argument("--deadline-ms", type=float, default=None,
                   help="per clip: past it the edge answer stands, unverified (default 500)")
    p.add_argument("--retries", type=int, default=None, help="extra attempts (default 2)")
    p.add_argument("--backoff-ms", type=float, default=None, help="first backoff (default 20)")
    p.add_argument("--backoff-max-ms", type=float, default=None,
                   help="largest backoff (default 200)")
    p.add_argument("--breaker-failures", type=int, default=None,
                   help="consecutive failures that open the circuit (default 5)")
    p.add_argument("--breaker-reset-s", type=float, default=None,
                   help="seconds before an open circuit lets a probe through (default 5)")


def load_fusion(args):
    """The fusion that answers offloaded clips: --fusion FILE, or the fusion.json that
    `demo` / `train-switcher` wrote beside --switcher; `--fusion none`: the cloud answers."""
    from edgeswitch.switcher import Fusion

    choice = getattr(args, "fusion", None)
    if choice == "none":
        return None
    if choice is None:
        beside = Path(args.switcher).with_name("fusion.json")
        return Fusion.load(beside) if beside.exists() else None
    return Fusion.load(choice)


def fusion_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fusion", default=None,
                   help="fusion JSON that answers offloaded clips from both models (default: "
                   "fusion.json beside --switcher when there is one; 'none': the cloud answers)")
