"""DMD on unlabelled video: the source and the models the DMD runner (dmd.runner) takes for a
folder of videos.

One unit per video (its clips are known only once it is decoded, by video.source); a video
that cannot be decoded fails its unit and the run goes on. The same records as for sensor
clips (dmd.records), so the switcher trains and calibrates unchanged. Clip ids are
`file@start` (the resolved path); the group of a clip is its video (a recording), so group-wise
validation never splits one video across folds. Both objects pickle, for Ray's workers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgeswitch.data.clips import model_input
from edgeswitch.dmd.corpus import Shard, plan_shards
from edgeswitch.dmd.runner import Identity, Plan, UnitClips, UnitUnreadable
from edgeswitch.models.base import check_same_classes, model_identity
from edgeswitch.video.source import ClipSpec, VideoError, iter_clips, video_files


@dataclass
class VideoSource:
    """Every video of a folder, glob, file or list, cut into clips by `spec`."""

    videos: str | list[str]
    spec: ClipSpec
    ship_clips = False  # frames are far larger than the file: a Ray worker decodes again

    def plan(self) -> Plan:
        shards, inputs = plan_shards(video_files(self.videos), 1)
        # the clip cutting is part of what a resumed run must share
        return Plan(shards, inputs, {"clip_spec": asdict(self.spec)}, None)

    def read(self, unit: Shard, classes: tuple[str, ...]) -> UnitClips:
        try:
            clips = list(iter_clips(unit.path, self.spec, name=unit.path))
        except VideoError as exc:
            raise UnitUnreadable(str(exc)) from None
        if not clips:
            raise UnitUnreadable(f"{unit.path}: shorter than one clip")
        return UnitClips(model_input(clips), np.asarray([c.clip_id for c in clips]),
                         np.asarray([c.source for c in clips]),
                         np.asarray([c.source for c in clips]),     # a video is a stream
                         np.asarray([c.start_s for c in clips], dtype=np.float64))


@dataclass
class VideoModels:
    """The edge and the cloud by name (video.registry); `cloud` holds video_cloud's keyword
    arguments (spec, url, model, token, ...)."""

    edge_name: str
    cloud_args: dict

    def edge(self):
        from edgeswitch.video.registry import video_edge

        return video_edge(self.edge_name)

    def cloud(self, classes: tuple[str, ...]):
        from edgeswitch.video.registry import video_cloud

        return video_cloud(**self.cloud_args, classes=tuple(classes))

    def close(self, cloud) -> None:
        if hasattr(cloud, "close"):
            cloud.close()

    def identity(self, edge, cloud) -> Identity:
        """The cloud's name with its address where it has one: two servers may serve a
        model of the same name."""
        check_same_classes(edge, cloud)
        url = self.cloud_args.get("url")
        name = model_identity(cloud)
        return Identity(tuple(edge.classes_), model_identity(edge),
                        name + (f"#{url}" if url and url not in name else ""))
