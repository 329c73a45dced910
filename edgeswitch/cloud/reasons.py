"""Why the cloud gave no answer: one enum for replies, failures, the hybrid's output and the
decision log. The values are the strings that JSON lines and logs carry."""

from __future__ import annotations

import re
import time
from enum import StrEnum


class FallbackReason(StrEnum):
    """Why the edge answer stands unverified. HTTP errors worth a retry are `http_<status>`
    (429 and 5xx): the common ones are members, any other is made on demand
    (`FallbackReason.http(507)` is `"http_507"`)."""

    TIMEOUT = "timeout"              # no reply by the deadline
    CONNECTION = "connection"        # unreachable: refused, reset, DNS, TLS refused
    OVERLOADED = "overloaded"        # HTTP 429 / 503: the cloud is busy (or asked to wait)
    HTTP_429 = "http_429"            # (before "overloaded": kept so old logs still parse)
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
    QUEUE_FULL = "queue_full"        # watch: dropped unasked, newer clips pushed it out
    DRAIN_DEADLINE = "drain_deadline"  # watch: still unanswered when the end-of-stream wait ran out
    NO_PERSON = "no_person"          # watch --vlm-crop: nobody to crop to, nothing sent
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
                 retryable: bool = True, retry_after_s: float | None = None) -> None:
        reason = FallbackReason(reason)
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason, self.detail, self.retryable = reason, detail, retryable
        self.retry_after_s = retry_after_s  # the server's Retry-After: ask nothing until then


MAX_RETRY_AFTER_S = 300.0  # a Retry-After longer than this is capped: a cloud comes back


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date, capped at
    MAX_RETRY_AFTER_S); None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def status_failure(status: int, detail: str = "", retry_after: str | None = None,
                   code: str | None = None) -> CloudFailure:
    """The failure an HTTP error status means; the detail names the status either way. 429
    and 503 are `overloaded`: retried with backoff, unless the server said when to come back
    (`Retry-After`): then not before, so not retried within this call. An edgeswitch server's
    504 `deadline_exceeded` (`code`, from the error body) is a `timeout` no retry can beat."""
    said = f"HTTP {status} {detail}".strip()
    if status == 504 and code == "deadline_exceeded":
        return CloudFailure(FallbackReason.TIMEOUT, said, retryable=False)
    if status in (401, 403):
        return CloudFailure(FallbackReason.UNAUTHORIZED, said, retryable=False)
    if status in (429, 503):
        wait = parse_retry_after(retry_after)
        if wait is not None:
            said += f" (Retry-After {wait:g} s)"
        return CloudFailure(FallbackReason.OVERLOADED, said, retryable=wait is None,
                            retry_after_s=wait)
    if 500 <= status <= 599:  # server errors may pass
        return CloudFailure(FallbackReason.http(status), said)
    return CloudFailure(FallbackReason.REJECTED, said, retryable=False)
