"""Readers for the UEA/UCR archive formats: `.ts` (sktime/aeon) and relational `.arff` (Weka).

Only equal-length series are supported, because clips are fixed-length `[T, C]` tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeswitch.errors import DataError


def _series(text: str, where: str) -> list[float]:
    try:
        return [float(v) if v.strip() != "?" else np.nan for v in text.split(",")]
    except ValueError as exc:
        raise DataError(f"{where}: non-numeric value ({exc})") from None


def _lines(path: Path, comment: str, kind: str):
    """(where, line) for every non-blank, non-comment line of a UEA text file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text {kind} file (cannot decode as UTF-8)") from None
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if line and not line.startswith(comment):
            yield f"{path}:{lineno}", line


def _stack(rows: list[list[list[float]]], path: Path) -> np.ndarray:
    lengths = {len(d) for r in rows for d in r}
    dims = {len(r) for r in rows}
    if len(dims) != 1:
        raise DataError(f"{path}: series have different numbers of dimensions {sorted(dims)}")
    if len(lengths) != 1:
        raise DataError(
            f"{path}: series have unequal lengths {sorted(lengths)[:5]}...; edgeswitch needs "
            "fixed-length clips (resample or window them first)"
        )
    return np.asarray(rows, dtype=np.float64).transpose(0, 2, 1)  # [n, C, T] -> [n, T, C]


def read_ts(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a UEA/UCR `.ts` file. Returns X `[n, T, C]`, string labels `[n]`, declared classes."""
    path = Path(path)
    classes: list[str] = []
    has_labels = False
    rows: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    for where, line in _lines(path, "#", ".ts"):
        if not in_data:
            key, _, value = line.partition(" ")
            key = key.lower()
            if key == "@timestamps" and value.strip().lower() == "true":
                raise DataError(f"{where}: time-stamped .ts files are not supported")
            if key == "@classlabel":
                parts = value.split()
                has_labels = bool(parts) and parts[0].lower() == "true"
                classes = parts[1:] if has_labels else []
            if key == "@data":
                in_data = True
            continue
        fields = line.split(":")
        if has_labels:
            labels.append(fields[-1].strip())
            fields = fields[:-1]
        rows.append([_series(f, where) for f in fields])
    if not in_data:
        raise DataError(f"{path}: no @data section; is this a UEA/UCR .ts file?")
    if not rows:
        raise DataError(f"{path}: no series after @data")
    X = _stack(rows, path)
    y = np.asarray(labels if has_labels else [], dtype=str)
    unknown = sorted(set(y) - set(classes)) if classes else []
    if unknown:
        raise DataError(f"{path}: labels {unknown} are not in the declared classes {classes}")
    return X, y, classes


def read_arff(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a UEA multivariate relational `.arff` file (one quoted relational value per row)."""
    path = Path(path)
    classes: list[str] = []
    rows: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    for where, line in _lines(path, "%", ".arff"):
        if not in_data:
            low = line.lower()
            if low.startswith("@attribute") and "{" in line:  # the nominal class attribute
                classes = [c.strip().strip("'\"") for c in line[line.index("{") + 1 :
                                                            line.rindex("}")].split(",")]
            if low.startswith("@data"):
                in_data = True
            continue
        body, _, label = line.rpartition(",")
        body = body.strip().strip("'\"")
        rows.append([_series(dim, where) for dim in body.split("\\n")])
        labels.append(label.strip().strip("'\""))
    if not rows:
        raise DataError(f"{path}: no rows after @data; is this a UEA relational .arff file?")
    return _stack(rows, path), np.asarray(labels, dtype=str), classes
