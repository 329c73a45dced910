"""Joining a Ray cluster ([ray] address), or starting a local one for this process: shared by
`distill --engine ray` and `serve-cloud --server ray`."""

from __future__ import annotations

import os
import re

from edgeswitch.errors import EdgeSwitchError


def start_ray(address: str | None, cpus_needed: float) -> bool:
    """Connect to `address`, or start a local cluster with at least `cpus_needed` logical
    CPUs (ONNX Runtime runs one thread per actor, so the OS shares the real cores). Returns
    whether this call started Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:  # a local cluster: a worker process slow to start on a busy machine is
        # not a failure (Ray gives it 60 s to register, then fails the task or actor)
        os.environ.setdefault("RAY_worker_register_timeout_seconds", "300")
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, int(-(-cpus_needed // 1)) + 1),
                     **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise EdgeSwitchError(f"cannot start or join {where}: {exc}") from None
    return True


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


def root_cause(exc: BaseException) -> str:
    """The user's error inside a Ray task failure. Ray sends the worker's traceback as text
    (the exception chain does not survive the trip), so take its last `XError: message`."""
    text = _ANSI.sub("", str(exc))
    found = [m.groups() for line in text.splitlines() if (m := _ERROR_LINE.match(line))]
    found = [f for f in found if f[0] not in ("RayTaskError", "UserCodeException")]
    if found:
        return f"{found[-1][0]}: {found[-1][1]}"[:500]
    return text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__
