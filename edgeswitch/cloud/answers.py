"""What a cloud's reply says: class probabilities from an OpenAI chat completion (sensor clips
from our server or video clips from a VLM alike), and the check every reply's probabilities
pass. A reply that cannot be read raises `CloudFailure` with reason `malformed`.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from edgeswitch.cloud.reasons import CloudFailure, FallbackReason
from edgeswitch.models.base import ProbaError, check_proba


def check_reply(proba, n: int, classes: tuple[str, ...], reply_classes=None) -> np.ndarray:
    """A reply's probabilities must be n rows over exactly our classes, finite, non-negative.
    A wrong class set is not retried: it is a configuration error, not a passing one."""
    if reply_classes is not None and tuple(reply_classes) != tuple(classes):
        raise CloudFailure(FallbackReason.WRONG_CLASSES, f"cloud classes "
                           f"{list(reply_classes)[:8]} are not the edge's {list(classes)[:8]}",
                           retryable=False)
    try:
        return check_proba(proba, n, len(classes), "the cloud")
    except ProbaError as exc:
        reason = FallbackReason(exc.reason)
        raise CloudFailure(reason, str(exc),
                           retryable=reason != FallbackReason.WRONG_CLASSES) from None


def match_class(text: str, classes: tuple[str, ...]) -> int | None:
    """The class a token or answer names: exact (case-insensitive), else a unique prefix."""
    t = text.strip().strip("\"'.").lower()
    if not t:
        return None
    lowered = [c.lower() for c in classes]
    if t in lowered:
        return lowered.index(t)
    if len(t) < 2:  # "a" or "f" says nothing: text tokens start with them all the time
        return None
    hits = [i for i, c in enumerate(lowered) if c.startswith(t)]
    return hits[0] if len(hits) == 1 else None


def label_from_text(content: str, classes: tuple[str, ...]) -> int:
    """The class a free-text or JSON answer names, or CloudFailure('malformed')."""
    text = content.strip()
    try:  # {"label": "..."} or {"class": "..."}
        obj = json.loads(text)
        if isinstance(obj, dict):
            text = str(obj.get("label", obj.get("class", obj.get("answer", text))))
        elif isinstance(obj, str):
            text = obj
    except ValueError:
        pass
    lowered = [c.lower() for c in classes]
    if text.strip().strip("\"'.").lower() in lowered:  # exactly a class name
        return lowered.index(text.strip().strip("\"'.").lower())
    named = {i for i, c in enumerate(classes)
             if re.search(rf"(?<!\w){re.escape(c.lower())}(?!\w)", text.lower())}
    if len(named) == 1:
        return named.pop()
    raise CloudFailure(FallbackReason.MALFORMED, f"answer names {'several' if named else 'no'} "
                       f"known class: {content[:80]!r}", retryable=False)


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def clean_answer(content: str) -> str:
    """The answer without reasoning blocks or a Markdown code fence around it."""
    text = _THINK.sub("", content or "").strip()
    m = _FENCE.match(text)
    return m.group(1).strip() if m else text


def _label_entries(entries: list, content: str) -> list:
    """The logprob entries that can hold the answer's label: after a reasoning block, and in a
    JSON answer after the "label" key (so "adult" in a sentence or "fall?" in reasoning is
    never read as the label)."""
    tokens = [str(e.get("token", "")) for e in entries]
    start = 0
    if "</think>" in content:
        text = ""
        for i, tok in enumerate(tokens):
            text += tok
            if "</think>" in text:
                start = i + 1
                break
    if clean_answer(content).lstrip().startswith("{"):
        text = ""
        for i in range(start, len(tokens)):
            text += tokens[i]
            if re.search(r'"(label|class|answer)"\s*:', text):
                return entries[i + 1:]
        return []
    return entries[start:]


def _logprob(value) -> float | None:
    """A log probability as a float <= 0, or None: a server's 1e308 or 10**400 is not one (and
    would overflow `exp`); a positive one is read as certainty."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return min(value, 0.0) if math.isfinite(value) else None


def _proba_at(entry: dict, k: int, classes: tuple[str, ...]) -> np.ndarray | None:
    """Probabilities from the alternatives at one token (the mass they leave is spread evenly
    over the classes they miss), or None when none of them names a class."""
    p = np.zeros(k)
    alts = entry.get("top_logprobs")
    # no list of alternatives (absent, null, or a server's garbage): the token itself
    for alt in alts if isinstance(alts, list) and alts else [entry]:
        if not isinstance(alt, dict):
            continue
        i, lp = match_class(str(alt.get("token", "")), classes), _logprob(alt.get("logprob"))
        if i is not None and lp is not None:
            p[i] += math.exp(lp)
    if p.sum() <= 0:
        return None
    missing = p == 0
    if missing.any():
        p[missing] = max(0.0, 1.0 - p.sum()) / missing.sum()
    return p / p.sum()


def proba_from_chat(reply: dict, classes: tuple[str, ...]) -> np.ndarray:
    """Class probabilities `[K]` from one chat-completions reply (its JSON).

    The answer's label comes from the text (plain, JSON, in a code fence, after a reasoning
    block). Where the server returned logprobs, the top alternatives at the first token that
    starts a label give the probabilities, provided they agree with the text's label (else
    the token read is not the answer and the text wins, as a one-hot row)."""
    try:
        choice = reply["choices"][0]
        content = choice["message"].get("content") or ""
        entries = [e for e in ((choice.get("logprobs") or {}).get("content")) or []
                   if isinstance(e, dict)]
    except (KeyError, IndexError, TypeError, AttributeError):
        raise CloudFailure(FallbackReason.MALFORMED,
                           f"not a chat completion: {str(reply)[:120]}") from None
    if not isinstance(content, str):
        raise CloudFailure(FallbackReason.MALFORMED, "the answer is not text", retryable=False)
    if "<think>" in content.lower() and "</think>" not in content.lower():
        raise CloudFailure(FallbackReason.MALFORMED, "the answer was cut off inside its "
                           f"reasoning (finish_reason {choice.get('finish_reason')}); raise "
                           "max_tokens", retryable=False)
    label = label_from_text(clean_answer(content), classes)
    k = len(classes)
    for entry in _label_entries(entries, content):
        if match_class(str(entry.get("token", "")), classes) is None:
            continue
        p = _proba_at(entry, k, classes)
        if p is not None and int(p.argmax()) == label:
            return p
        break
    p = np.zeros(k)
    p[label] = 1.0
    return p
