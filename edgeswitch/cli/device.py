"""`edgeswitch export-device`: a deployed bundle as one portable ONNX artifact."""

from __future__ import annotations

import argparse


def positive_rate(text: str) -> float:
    try:
        hz = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < hz < float("inf"):
        raise argparse.ArgumentTypeError(f"a sample rate is > 0 Hz, got {text}")
    return hz


def cmd_export_device(args) -> int:
    from edgeswitch.device.export import export_device

    channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
    desc = export_device(args.bundle, args.out, int8=args.int8, sample_rate_hz=args.sample_rate,
                         channels=channels)
    sizes = ", ".join(f"{g['file']} ({g['bytes'] / 1024:.1f} KiB)"
                      for g in desc["graphs"].values())
    op = desc["operating_point"]
    print(f"export-device: router {desc['router']['name']}"
          + (f" ({desc['router']['family']})" if desc["router"]["family"] else "")
          + f", state [{desc['state']['J']}, {desc['state']['K']}], threshold {op['threshold']}"
          + (" (adaptive)" if op["adaptive"] else "") + f", artifact {desc['artifact_id']}; "
          f"wrote {sizes} and device.json to {args.out}")
    return 0


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "export-device", help="one ONNX graph for a device: edge model, router, state, fusion",
        description="Write a deployed bundle (edge.onnx, switcher.npz, router.json, "
        "operating_point.json, fusion.json: what `demo` writes) as one portable artifact: "
        "DIR/device.onnx holds the edge model, the router's trust, the stream state's update "
        "and the fusion of an answered offload in one graph that any ONNX runtime runs (a "
        "phone's browser with onnxruntime-web too), and DIR/device.json says how to drive it "
        "(inputs, outputs, threshold and controller, initial state, the cloud's /v1/classify "
        "protocol). Run it with edgeswitch.device.runner.DeviceRunner (numpy + onnxruntime).")
    p.add_argument("bundle", help="bundle folder (the demo's OUT, or save_bundle's)")
    p.add_argument("--out", required=True, help="artifact folder to write")
    p.add_argument("--int8", action="store_true",
                   help="also write device.int8.onnx: the edge's weights quantized to 8 bits "
                   "(onnxruntime dynamic quantization), the router part left in float")
    p.add_argument("--sample-rate", type=positive_rate, default=None, metavar="HZ",
                   help="the clips' sample rate, recorded in device.json for a device that "
                   "cuts its own clips (a bundle does not carry it; watch: 50)")
    p.add_argument("--channels", default=None, metavar="NAMES",
                   help="comma-separated channel names in clip order, recorded in device.json "
                   "(e.g. ax,ay,az,wx,wy,wz: what a phone page maps its motion sensors onto)")
    add_common(p)
    p.set_defaults(func=cmd_export_device)
