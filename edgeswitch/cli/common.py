"""What the subcommands share: data and model arguments, optional extras, output files.

Config-backed flags are generated in cli/flags.py; this module holds the arguments that name
inputs and outputs (files, models, servers), which are not settings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeswitch.cli.flags import config_arg, config_flags, resolve_config
from edgeswitch.errors import EdgeSwitchError

SPLITS = ["all", "train", "pool", "calib", "test"]


def data_args(p: argparse.ArgumentParser, default_split: str | None, required: bool = True,
              help_extra: str = "") -> None:
    """--data, --split, --seed and --config: which clips a step reads, and its settings."""
    p.add_argument("--data", required=required,
                   help="watch, basicmotions, or a .npz / .ts / .arff file or UEA folder"
                   + help_extra)
    shown = default_split or "pool; a sharded run reads all"
    p.add_argument("--split", default=default_split, choices=SPLITS,
                   help=f"which group split of --data to use (default: {shown}); 'all' uses "
                   "every clip, for files that are already one split")
    config_arg(p)
    config_flags(p, "", only=("seed",))


def run_args(p: argparse.ArgumentParser, out: str) -> None:
    """A whole run on a data set (demo, benchmark): its output folder, config and model cache."""
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")
    config_arg(p)
    config_flags(p, "", only=("dataset", "streams", "seed"))
    p.add_argument("--cache", default=None,
                   help="model cache folder (default: $EDGESWITCH_CACHE or ~/.cache/edgeswitch)")
    p.add_argument("--no-cache", action="store_true", help="always retrain the models")


def model_cache(args) -> Path | None:
    from edgeswitch.models.cache import default_cache_dir

    return None if args.no_cache else Path(args.cache or default_cache_dir())


def deployed_args(p: argparse.ArgumentParser) -> None:
    """What a deployed hybrid reads besides its models: switcher, operating point, fusion, and
    where its decisions are logged."""
    p.add_argument("--switcher", required=True, help="switcher (.npz) from train-switcher")
    router_arg(p)
    p.add_argument("--op", required=True, help="operating point JSON from calibrate")
    fusion_arg(p)
    p.add_argument("--log", default=None, help="append every decision to this SQLite file")


def load_split(args, classes: tuple[str, ...] | None = None, split: str | None = None) -> tuple:
    """(clips, splits or None, config) for a step: a named split of --data, or all of it.
    `classes` (a model's) names the label set of unlabelled files that carry none."""
    from edgeswitch.pipeline import load_data, split_data

    cfg = resolve_config(args)
    data = load_data(cfg, args.data, classes)
    split = split or args.split
    if split == "all":
        return data, None, cfg
    splits = split_data(cfg, data)
    return getattr(splits, split), splits, cfg


def load_models(args, *, cloud_needed: bool = True):
    """Edge (and cloud) ONNX models of a step, checked to share one label set."""
    from edgeswitch.models import OnnxClassifier, check_same_classes

    edge = OnnxClassifier(args.edge)
    cloud = OnnxClassifier(args.cloud) if getattr(args, "cloud", None) else None
    if cloud is None and cloud_needed:
        raise EdgeSwitchError("this step needs --cloud")
    if cloud is not None:
        check_same_classes(edge, cloud)
    return edge, cloud


def load_checked_switcher(path: str, edge):
    """The switcher file, checked to have been trained on this edge model's outputs."""
    from edgeswitch.switcher import load_switcher

    sw = load_switcher(path)
    sw.check_edge(edge)
    return sw


def router_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--router", default=None,
                   help="stream router file (router.json, from demo or train-switcher; default: "
                   "router.json beside --switcher when there is one; 'none': the switcher "
                   "judges each clip alone)")


def load_router(args, edge, classes: tuple[str, ...] | None = None):
    """The router a deployed run routes with: --router FILE (a belief router), router.json
    beside --switcher, or (`--router none`, or no such file) the switcher per clip. Without an
    edge model (records only), `classes` are the label set."""
    from edgeswitch.switcher import load_switcher
    from edgeswitch.switcher.routers import SwitcherRouter
    from edgeswitch.switcher.stream import BeliefRouter

    choice = getattr(args, "router", None)
    if not getattr(args, "switcher", None):
        if choice in (None, "none"):
            raise EdgeSwitchError("give --switcher (and router.json beside it), or --router")
        return BeliefRouter.load(choice, tuple(edge.classes_ if edge is not None else classes))
    beside = Path(args.switcher).with_name("router.json")
    if choice == "none" or (choice is None and not beside.exists()):
        return SwitcherRouter(load_checked_switcher(args.switcher, edge) if edge is not None
                              else load_switcher(args.switcher))
    return BeliefRouter.load(choice or beside, tuple(edge.classes_ if edge is not None
                                                     else classes))


def check_router_op(router, op, op_path) -> None:
    """An operating point's threshold means something for the router it was calibrated for
    only: a belief router's (its trust in its belief) or a per-clip switcher's."""
    made_for = op.params.get("router")
    if router.stateful and made_for != router.name:
        raise EdgeSwitchError(f"--op {op_path} was calibrated for per-clip scores, and the run "
                              f"routes with the {router.name} router: calibrate again with its "
                              "router file (edgeswitch calibrate --router ...)")
    if not router.stateful and made_for == "belief":
        raise EdgeSwitchError(f"--op {op_path} was calibrated for the belief router: give its "
                              "router file (--router router.json)")


def make_hybrid(args, edge, cloud, shadow_rate: float = 0.0):
    """The hybrid of a deployed run: its router (--router, or --switcher per clip), --op,
    --fusion and (--log) its decision log."""
    from edgeswitch.models.base import model_identity
    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.runtime.hybrid import HybridClassifier
    from edgeswitch.switcher import OperatingPoint

    router = load_router(args, edge)
    op = OperatingPoint.load(args.op)
    check_router_op(router, op, args.op)
    fusion = load_fusion(args)
    log = DecisionLog(args.log, edge.classes_, model_identity(edge), cloud.name) \
        if args.log else None
    cfg = resolve_config(args)
    return HybridClassifier(edge, router, cloud, op, log=log, shadow_rate=shadow_rate,
                            fusion=fusion, max_streams=cfg.stream.max_streams)


def close_hybrid(hybrid) -> None:
    """Close what a hybrid holds open: its cloud client and its decision log."""
    try:
        if hasattr(hybrid.cloud, "close"):
            hybrid.cloud.close()
    finally:
        if hybrid.log is not None:
            hybrid.log.close()


# settings only a cloud server (--cloud-url) acts on, and only a VLM server
REMOTE_KEYS = ("runtime.protocol", "runtime.deadline_ms", "runtime.retries", "runtime.backoff_ms",
               "runtime.backoff_max_ms", "runtime.breaker_failures", "runtime.breaker_reset_s",
               "distill.cloud_timeout_ms", "video.vlm_deadline_ms")
REMOTE_ARGS = ("model", "token_file", "ca_cert", "tls_client_cert", "tls_client_key")
VLM_KEYS = ("video.vlm_deadline_ms", "video.vlm_frames", "video.constraint", "video.logprobs")
VLM_ARGS = ("prompt_file",)


def refuse_unused(args, keys: tuple[str, ...], names: tuple[str, ...], why: str) -> None:
    """Flags given on the command line that this run would not act on are an error that
    names them (a silently ignored flag is a setting the user believes in and does not get)."""
    from edgeswitch.cli.flags import flag_values

    given = [k for k in flag_values(args) if k in keys]
    flags = ["--" + k.rpartition(".")[2].replace("_", "-") for k in given]
    flags += ["--" + n.replace("_", "-") for n in names if getattr(args, n, None)]
    if flags:
        raise EdgeSwitchError(f"{', '.join(dict.fromkeys(flags))} "
                              f"{'apply' if len(flags) > 1 else 'applies'} {why}")


def out_file(path: str) -> Path:
    out = Path(path)
    if out.is_dir():
        raise EdgeSwitchError(f"--out {out} is a folder; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def cloud_args(p: argparse.ArgumentParser, what: str) -> None:
    """How a command reaches the cloud: an ONNX file in this process or a server."""
    p.add_argument("--cloud", default=None, help=what)
    p.add_argument("--cloud-url", default=None,
                   help="or: a cloud server (edgeswitch serve-cloud or OpenAI-compatible)")
    server_args(p)
    p.add_argument("--tls-client-cert", default=None,
                   help="mutual TLS: this device's certificate (PEM) for a server that asks "
                   "for one (serve-cloud --tls-ca)")
    p.add_argument("--tls-client-key", default=None, help="... and its private key (PEM)")


def server_args(p: argparse.ArgumentParser) -> None:
    """Who to ask on a cloud server, and how to trust and be trusted by it."""
    p.add_argument("--model", default=None,
                   help="the model name to ask the server for (default: the one it serves)")
    p.add_argument("--token-file", default=None,
                   help="file with the server's bearer token (default: $EDGESWITCH_TOKEN)")
    p.add_argument("--ca-cert", default=None,
                   help="CA or self-signed certificate to trust for an https --cloud-url")


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


# exit codes of a run over a stream of clips (classify, watch); also in --help and docs
EXIT_OK, EXIT_CLIPS_FAILED, EXIT_ERROR, EXIT_CLOUD_NEVER_ANSWERED = 0, 1, 2, 3
EXIT_CODES = ("exit codes: 0 every clip answered; 1 some clips failed (an error record each in "
              "the output, the rest answered); 2 an error stopped the run (bad input, an output "
              "or log that cannot be written); 3 clips were offloaded and the cloud answered "
              "none of them (unauthorized, rejected, connection, timeout...: the edge answered "
              "all, flagged verified=false). 3 wins over 1.")


def stream_exit(summary, command: str, wrote: str) -> int:
    """The summary line on stderr, and the exit code that says whether the run did what was
    asked (see EXIT_CODES): a run whose every offload fell back is no success."""
    import sys

    total = summary.clips + summary.failed
    reasons = ", ".join(f"{r} {n}" for r, n in summary.reasons.most_common())
    print(f"{command}: {total} clips: {summary.clips} answered ({summary.cloud} by the cloud), "
          f"{summary.failed} failed, {summary.fallbacks} fallbacks to the edge"
          + (f" ({reasons})" if reasons else "") + f"; {wrote}", file=sys.stderr)
    code = EXIT_OK
    if summary.failed:
        print(f"edgeswitch: error: {summary.failed} of {total} clips failed (an error record "
              "each in the output): " + "; ".join(summary.errors)
              + ("; ..." if summary.failed > len(summary.errors) else ""), file=sys.stderr)
        code = EXIT_CLIPS_FAILED
    if summary.cloud_never_answered():
        code = cloud_never_answered(summary.offloaded, reasons)
    return code


def cloud_never_answered(offloaded: int, reasons) -> int:
    """Say that every offload fell back (a run that did not do what was asked): exit 3."""
    import sys

    print(f"edgeswitch: error: the cloud answered none of the {offloaded} offloaded clips "
          f"({reasons}); the edge answer stands for all of them. Check --cloud-url, the token "
          "(--token-file or $EDGESWITCH_TOKEN) and --model", file=sys.stderr)
    return EXIT_CLOUD_NEVER_ANSWERED


# argparse value types: a bad value is argparse's one-line usage error, never a traceback
def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def port_number(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free one), got {n}")
    return n


def non_negative(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= s < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return s
