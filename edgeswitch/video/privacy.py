"""What leaves the device for the cloud: the whole frames, or only the tracked person.

The VLM client already sends only `vlm_frames` frames per clip, each at most `vlm_size`
pixels on its longer side (cloud.payloads via video.vlm.VideoChat). `--vlm-crop` narrows that
to the person: the box MoveNet found around the person the edge followed through the clip
(the edge model computed those poses already; nothing runs twice), padded by 15%, one box for
the whole clip so the person's motion stays visible. A clip where nobody was found is not sent.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeswitch.errors import EdgeSwitchError
from edgeswitch.video.pose import follow
from edgeswitch.video.source import VideoClip

PAD = 0.15  # of the box's size, on each side


def check_can_crop(edge) -> None:
    if not hasattr(edge, "pose"):
        raise EdgeSwitchError(f"--vlm-crop needs a pose edge model (nfd, pose:MODEL.onnx): "
                              f"{getattr(edge, 'name', edge)} finds no person")


def person_box(edge, clip: VideoClip) -> np.ndarray | None:
    """[x1, y1, x2, y2] in [0, 1] around the followed person over the clip, or None."""
    people = [p for p in follow(edge.pose.people(clip)) if p is not None]  # cached poses
    if not people:
        return None
    boxes = np.stack([p.box for p in people])
    lo, hi = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
    pad = (hi - lo) * PAD
    return np.concatenate([(lo - pad).clip(0, 1), (hi + pad).clip(0, 1)])


def crop_clip(clip: VideoClip, box: np.ndarray) -> VideoClip:
    """The clip's frames cut to `box` (at least 16 pixels a side)."""
    h, w = clip.frames.shape[1:3]
    x1, x2 = int(box[0] * w), int(np.ceil(box[2] * w))
    y1, y2 = int(box[1] * h), int(np.ceil(box[3] * h))
    x2, y2 = min(w, max(x2, x1 + 16)), min(h, max(y2, y1 + 16))
    return replace(clip, frames=np.ascontiguousarray(clip.frames[:, y1:y2, x1:x2]),
                   meta=dict(clip.meta, crop=[x1, y1, x2, y2]))
