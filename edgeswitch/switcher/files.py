"""The small JSON files a bundle carries (operating point, fusion, router): one reader, one
wording for a missing or corrupt file, and the file's name on every error its content raises."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from edgeswitch.errors import DataError

T = TypeVar("T")


def load_json(path: str | Path, what: str, parse: Callable[[dict], T]) -> T:
    """`parse(content)` of the JSON file `path` (`what` it should be: "operating point")."""
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{what} file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a JSON {what} file ({exc})") from None
    try:
        return parse(d)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
