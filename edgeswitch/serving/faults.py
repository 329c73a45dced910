"""Fault injection (`serve-cloud --fault`): deliberate misbehaviour of the server, for the
resilience tests of edge deployments. Faults hit model requests only (classify and chat),
after the request was decoded and before the model runs."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from fastapi.responses import Response

from edgeswitch.errors import EdgeSwitchError
from edgeswitch.serving.metrics import ServerMetrics
from edgeswitch.serving.responses import error_response

FAULT_KINDS = ("sleep", "http500", "malformed", "wrong_classes")
MALFORMED_BODY = b'{"proba": [[0.1, 0.2'  # cut off mid-array: no JSON parser accepts it


@dataclass(frozen=True)
class Fault:
    """A deliberate misbehaviour for resilience tests of edge deployments (`--fault`)."""

    kind: str
    rate: float = 1.0      # share of classify requests it hits
    seconds: float = 0.0   # for "sleep"

    @classmethod
    def parse(cls, text: str) -> Fault:
        """`KIND[:SECONDS][@RATE]`, e.g. `http500@0.2`, `sleep:2.5`, `malformed`."""
        m = re.fullmatch(r"(\w+)(?::(\d+(?:\.\d+)?))?(?:@(\d+(?:\.\d+)?))?", text.strip())
        if not m or m.group(1) not in FAULT_KINDS:
            raise EdgeSwitchError(f"bad fault {text!r}: use KIND[:SECONDS][@RATE] with KIND one "
                                  f"of {', '.join(FAULT_KINDS)}")
        rate = float(m.group(3)) if m.group(3) else 1.0
        seconds = float(m.group(2)) if m.group(2) else 0.0
        if not 0 <= rate <= 1 or (m.group(1) == "sleep" and seconds <= 0):
            raise EdgeSwitchError(f"bad fault {text!r}: RATE within [0, 1], sleep needs SECONDS")
        return cls(m.group(1), rate, seconds)


@dataclass
class FaultInjector:
    """The app's faults and the random draws that decide which requests they hit (seeded, so
    a test run is repeatable: per request, each fault draws once in the order given, until
    one answers in place of the model)."""

    faults: tuple[Fault, ...] = ()
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    async def inject(self, X: np.ndarray, run: Callable[[np.ndarray], Awaitable[np.ndarray]],
                     metrics: ServerMetrics) -> np.ndarray | Response | None:
        """What answers this request instead of a normal model run: a response (http500,
        malformed), probabilities missing a class (wrong_classes), or None (no fault hit,
        or only a sleep)."""
        for f in self.faults:
            if self.rng.random() >= f.rate:
                continue
            metrics.errors.labels(f"injected_{f.kind}").inc()
            if f.kind == "sleep":
                await asyncio.sleep(f.seconds)
            elif f.kind == "http500":
                return error_response(500, "injected fault: internal error", "injected")
            elif f.kind == "malformed":
                return Response(MALFORMED_BODY, media_type="application/json")
            elif f.kind == "wrong_classes":
                return (await run(X))[:, :-1]
        return None
