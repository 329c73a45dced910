"""Which files hold clips: `.npz` clip files and videos, found in a folder, a glob or a list.

Which files are videos: `.ts` is both a UEA time-series file (text) and an MPEG transport
stream (binary), so for that one suffix the first byte decides: MPEG-TS packets start with the
sync byte 0x47, a UEA file with a comment or an @ header line."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from edgeswitch.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
_MPEG_TS_SYNC = b"\x47"


def is_video(path: str | Path) -> bool:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".ts":
        return suffix in VIDEO_SUFFIXES
    try:
        with path.open("rb") as fh:
            return fh.read(1) == _MPEG_TS_SYNC
    except OSError:  # not there (yet): a .ts path means UEA data unless it is a stream
        return False


def is_video_source(data: str) -> bool:
    """A video file, a folder holding videos, a stream URL or a webcam index."""
    path = Path(data)
    if "://" in data or data.isdigit() or is_video(path):
        return True
    return path.is_dir() and any(is_video(p) for p in path.iterdir())


def corpus_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files of a corpus, all `.npz` clip files or all videos: a folder (sorted), a glob,
    one file, or a list of any of these. Order matters: it is the order of the records."""
    if isinstance(spec, str | Path):
        text = str(spec)
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(path.glob("*.npz")) or sorted(p for p in path.iterdir()
                                                         if is_video(p))
            if not files:
                raise DataError(f"{path}: the folder holds no .npz clip files or videos")
        elif any(c in text for c in "*?["):
            files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text)))
            if not files:
                raise DataError(f"{text}: the pattern matches no files")
        elif path.is_file():
            files = [path]
        else:
            raise DataError(f"corpus {text}: no such file or folder")
    else:
        files = [f for s in spec for f in corpus_files(s)]
    kinds = {"video" if is_video(f) else f.suffix for f in files}
    if not kinds <= {".npz", "video"}:
        bad = next(f for f in files if f.suffix != ".npz" and not is_video(f))
        raise DataError(f"{bad}: corpus files must be .npz (X [n,T,C], optional ids, groups) "
                        f"or videos {VIDEO_SUFFIXES}")
    if len(kinds) > 1:
        raise DataError("a corpus is all .npz clip files or all videos, not both")
    return files
