"""A throwaway network namespace that has only loopback, for running Ray on a shared machine
(the Ray tests and benchmarks; nothing in the package uses it).

Ray binds to the machine's network address even when told 127.0.0.1. Tests and benchmarks on a
shared or offline machine therefore start Ray inside a namespace where the only interface is
`lo`, so nothing it opens is reachable from outside. Needs root and iproute2 (`ip netns`).
Files are shared with the host: only the network is private.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid

from edgeswitch.errors import EdgeSwitchError

# what a Ray process needs to start quietly and without a token, here and on any laptop
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}

# The priority the Ray tests run at. Ray Serve answers a request through a chain of processes
# (proxy, router, replica), each waiting on the next: beside five CPU-bound test workers on
# a 2-core machine that chain waited for the CPU at every hop, and the Ray fuzz test ran 7x its
# idle time (880 s against 120 s), the suite's longest path. At nice -5 each hop runs sooner
# when it is woken (400 s idle); what it computes is the same. At nice -10 it ran faster still,
# but the tests that count what a real server does within a deadline, beside it, failed on a
# loaded machine. (GNU nice runs the command at the old priority, with a warning, where
# raising it is not allowed.)
TEST_NICE = -5


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", *args], capture_output=True, text=True, check=check)


class LoopbackNetns:
    """`with LoopbackNetns() as ns: subprocess.run(ns.wrap([...]))`; every process still
    inside is SIGKILLed and the namespace deleted on exit."""

    def __init__(self, prefix: str = "edgeswitch", nice: int = 0) -> None:
        self.name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.created = False
        self.nice = nice  # the niceness of what `wrap` runs (0: unchanged)

    @staticmethod
    def available() -> str | None:
        """None when namespaces can be made here, else why not."""
        if shutil.which("ip") is None:
            return "the `ip` command (iproute2) is not installed"
        if os.geteuid() != 0:
            return "creating a network namespace needs root"
        return None

    def __enter__(self) -> LoopbackNetns:
        why = self.available()
        if why:
            raise EdgeSwitchError(f"cannot create a loopback-only network namespace: {why}")
        r = _ip("add", self.name, check=False)
        if r.returncode:
            raise EdgeSwitchError(f"ip netns add {self.name} failed: {r.stderr.strip()}")
        self.created = True
        _ip("exec", self.name, "ip", "link", "set", "lo", "up")
        return self

    def wrap(self, cmd: list[str]) -> list[str]:
        """`cmd` run inside the namespace (at niceness `self.nice` when set)."""
        nice = ["nice", "-n", str(self.nice)] if self.nice else []
        return [*nice, "ip", "netns", "exec", self.name, *cmd]

    def pids(self) -> list[int]:
        r = _ip("pids", self.name, check=False)
        return [int(p) for p in r.stdout.split()]

    def kill_all(self, timeout_s: float = 10.0) -> None:
        """SIGKILL every process in the namespace (a run, and any Ray daemons it started)."""
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        raise EdgeSwitchError(f"processes in {self.name} survived SIGKILL: {self.pids()}")

    def __exit__(self, *exc) -> None:
        if self.created:
            self.kill_all()
            _ip("delete", self.name, check=False)
            self.created = False
