"""Checks of Arrow table columns that hold per-clip vectors (DMD records, recorded outputs):
every failure is a DataError that names the row, its clip and the column, not numpy's shape
error from deep inside a reshape."""

from __future__ import annotations

import numpy as np

from edgeswitch.errors import DataError


def row_name(i: int, ids: list) -> str:
    return f"row {i} (clip {str(ids[i])!r})" if ids[i] is not None else f"row {i}"


def no_nulls(values: list, name: str, ids: list, where: str) -> None:
    for i, v in enumerate(values):
        if v is None:
            raise DataError(f"{where}: {row_name(i, ids)} has no {name} (null)")


def list_matrix(column, name: str, ids: list, where: str, dtype=np.float32,
                per_row: int = 1) -> np.ndarray:
    """A list column as `[n, width]` numbers: every row present, of one length, finite; else a
    DataError naming the first bad row and the column. `dtype` None keeps the column's float
    width (float32 or float64). `per_row`: the column holds that many lists per file row (a
    flattened list of lists), so a bad entry i is reported as row i // per_row.
    Checked with Arrow's kernels, without a Python object per value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def row(i: int) -> str:
        return row_name(i // per_row, ids)

    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise DataError(f"{where}: {name} must be a list column, got {column.type}")
    if column.null_count:
        i = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
        raise DataError(f"{where}: {row(i)} has no {name} (null)")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    width = int(lengths[0]) if len(lengths) else 0
    if (lengths != width).any():
        i = int(np.argmax(lengths != width))
        raise DataError(f"{where}: {row(i)}: {name} has {lengths[i]} values, row 0 has "
                        f"{width} (every row needs the same length)")
    flat = pc.list_flatten(column)
    if flat.null_count:
        parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
        i = int(parents[np.argmax(pc.is_null(flat).to_numpy(zero_copy_only=False))])
        raise DataError(f"{where}: {row(i)}: {name} holds a null value")
    try:
        values = flat.to_numpy(zero_copy_only=False)
        if dtype is None:
            dtype = np.float32 if values.dtype == np.float32 else np.float64
        out = values.astype(dtype).reshape(len(lengths), width)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{where}: {name} is not a table of numbers ({exc})") from None
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where}: {row(i)}: {name} holds NaN or inf ({int(bad.sum())} "
                        f"of {len(out)} rows): bad input data, not a model output")
    return out
