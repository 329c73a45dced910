"""Why the cloud gave no answer: one enum for replies, failures, the hybrid's output and the
decision log. The values are the strings that JSON lines and logs carry."""

from __future__ import annotations

import re
from enum import StrEnum


class FallbackReason(StrEnum):
    """Why the edge answer stands unverified. HTTP errors worth a retry are `http_<status>`
    (429 and 5xx): the common ones are members, any other is made on demand
    (`FallbackReason.http(507)` is `"http_507"`)."""

    TIMEOUT = "timeout"              # no reply by the deadline
    CONNECTION = "connection"        # unreachable: refused, reset, DNS, TLS refused
    HTTP_429 = "http_429"            # overloaded
    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    HTTP_504 = "http_504"
    UNAUTHORIZED = "unauthorized"    # 401 / 403: a token problem, not retried
    REJECTED = "rejected"            # other 4xx: the request is wrong, not retried
    MALFORMED = "malformed"          # the reply is not a usable answer
    WRONG_CLASSES = "wrong_classes"  # the cloud answers over another label set
    CIRCUIT_OPEN = "circuit_open"    # the cloud failed recently: not asked
    NO_CLOUD = "no_cloud"            # an edge-only deployment
    ERROR = "error"                  # anything else (a client bug, input it cannot send)

    @classmethod
    def http(cls, status: int) -> FallbackReason:
        return cls(f"http_{status}")

    @classmethod
    def _missing_(cls, value: object) -> FallbackReason | None:
        if isinstance(value, str) and re.fullmatch(r"http_(429|5\d\d)", value):
            member = str.__new__(cls, value)
            member._name_, member._value_ = value.upper(), value
            return cls._value2member_map_.setdefault(value, member)
        return None


class CloudFailure(Exception):
    """One attempt's failure: `reason` says why, `retryable` whether another attempt may pass."""

    def __init__(self, reason: FallbackReason | str, detail: str = "",
                 retryable: bool = True) -> None:
        reason = FallbackReason(reason)
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason, self.detail, self.retryable = reason, detail, retryable


def status_failure(status: int, detail: str = "") -> CloudFailure:
    """The failure an HTTP error status means; the detail names the status either way."""
    said = f"HTTP {status} {detail}".strip()
    if status in (401, 403):
        return CloudFailure(FallbackReason.UNAUTHORIZED, said, retryable=False)
    if 500 <= status <= 599 or status == 429:  # overload and server errors may pass
        return CloudFailure(FallbackReason.http(status), said)
    return CloudFailure(FallbackReason.REJECTED, said, retryable=False)
