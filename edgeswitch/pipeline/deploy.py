"""Deploy a run: the bundle a device needs, and a replay of the test clips through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeswitch.errors import EdgeSwitchError
from edgeswitch.pipeline.steps import Artifacts


def save_bundle(a: Artifacts, out_dir: Path) -> dict[str, Path]:
    """What a deployment needs: the two models, the switcher and the operating point."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"edge": a.edge.save(out_dir / "edge.onnx"),
             "cloud": a.cloud.save(out_dir / "cloud.onnx"),
             "switcher": a.switcher.save(out_dir / "switcher.npz"),
             "operating_point": a.operating_point.save(out_dir / "operating_point.json")}
    fusion_path = out_dir / "fusion.json"
    if a.fusion is not None:
        paths["fusion"] = a.fusion.save(fusion_path)
    else:
        fusion_path.unlink(missing_ok=True)  # a bundle without it: the cloud answers
    router_path = out_dir / "router.json"
    if a.router is not None and a.router.stateful:
        paths["router"] = a.router.save(router_path, tuple(a.edge.classes_))
    else:
        router_path.unlink(missing_ok=True)  # without it the switcher routes each clip
    return paths


def serve_and_replay(a: Artifacts, out_dir: Path, transport: str = "http",
                     progress: bool = False) -> dict:
    """Deploy the run and replay the test clips through it as a device stream, one clip per
    call: in process, and (transport="http") through the edge runtime to the cloud model served
    by `edgeswitch serve-cloud` in a child process on a free loopback port, with a token. Every
    decision of the deployed run goes to OUT/decisions.sqlite."""
    import secrets

    from edgeswitch.cloud.client import InProcessCloud
    from edgeswitch.models.base import model_identity
    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.runtime.replay import replay

    if transport not in ("http", "in-process"):
        raise EdgeSwitchError(f"transport must be 'http' or 'in-process', got {transport!r}")
    paths = save_bundle(a, out_dir)
    log_path = out_dir / "decisions.sqlite"
    for suffix in ("", "-wal", "-shm"):  # a fresh log per run
        Path(f"{log_path}{suffix}").unlink(missing_ok=True)

    def run_with(cloud, log: DecisionLog | None) -> dict:
        return replay(a.hybrid(cloud, log=log), a.splits.test, progress=progress)

    local_cloud = InProcessCloud(a.cloud)
    if transport == "in-process":
        with DecisionLog(log_path, a.edge.classes_, model_identity(a.edge),
                         model_identity(a.cloud)) as log:
            served = run_with(local_cloud, log)
        served.pop("labels")
        served.pop("offloaded")
        return {"transport": "in-process", **served, "decision_log": str(log_path)}

    from edgeswitch.cloud.remote import RemoteCloud
    from edgeswitch.serving.server import ServerProcess

    reference = run_with(local_cloud, None)
    token = secrets.token_urlsafe(24)
    with ServerProcess(paths["cloud"], a.cfg.serve, token=token) as server, \
            RemoteCloud(server.url, a.edge.classes_, a.cfg.runtime, token=token,
                        model=a.cloud.name) as cloud, \
            DecisionLog(log_path, a.edge.classes_, model_identity(a.edge), cloud.name) as log:
        served = run_with(cloud, log)
        url = server.url
    return {"transport": "http", "url": url, **{k: v for k, v in served.items()
                                                 if k not in ("labels", "offloaded")},
            "agrees_with_in_process": float(np.mean(served["labels"] == reference["labels"])),
            "same_offloads_as_in_process": float(np.mean(served["offloaded"]
                                                         == reference["offloaded"])),
            "in_process_call_latency_ms": reference["call_latency_ms"],
            "decision_log": str(log_path), "bundle": {k: str(v) for k, v in paths.items()}}
