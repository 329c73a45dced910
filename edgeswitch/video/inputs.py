"""What a video model reads: a non-empty list of `VideoClip` with RGB uint8 frames.

The one input check of the video edge and cloud models (the sensor models' is
`data.clips.check_clips`), so a bad call fails with a message naming the problem before any
library sees the frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeswitch.errors import DataError, ModelError
from edgeswitch.video.source import VideoClip


def check_video_clips(clips: Sequence[VideoClip], who: str) -> list[VideoClip]:
    """`clips` as a list, each with frames `[N, H, W, 3]` uint8 (N >= 1) and N times.

    ModelError when the input is not a list of VideoClip (e.g. sensor clips sent to a video
    model), DataError when a clip's frames are malformed."""
    if isinstance(clips, np.ndarray) and clips.dtype != object:
        raise ModelError(f"{who} takes a non-empty list of VideoClip, got an array of shape "
                         f"{list(clips.shape)} ({clips.dtype})")
    try:
        clips = list(clips)
    except TypeError:
        raise ModelError(f"{who} takes a non-empty list of VideoClip, got "
                         f"{type(clips).__name__}") from None
    if not clips or not all(isinstance(c, VideoClip) for c in clips):
        kinds = sorted({type(c).__name__ for c in clips})
        raise ModelError(f"{who} takes a non-empty list of VideoClip, got "
                         f"{'an empty list' if not clips else 'items of type ' + str(kinds)}")
    for i, clip in enumerate(clips):
        f = clip.frames
        if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[3] != 3 or not len(f):
            shape = list(f.shape) if isinstance(f, np.ndarray) else type(f).__name__
            raise DataError(f"{who}: clip {i} ({clip.clip_id}) needs RGB frames [N, H, W, 3] "
                            f"with N >= 1, got {shape}")
        if f.dtype != np.uint8:
            raise DataError(f"{who}: clip {i} ({clip.clip_id}) frames must be uint8 RGB, got "
                            f"dtype {f.dtype}")
        if len(clip.times) != len(f):
            raise DataError(f"{who}: clip {i} ({clip.clip_id}) has {len(f)} frames and "
                            f"{len(clip.times)} times")
    return clips
