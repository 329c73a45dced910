"""DMD on unlabelled video: edge and cloud over every clip of a folder of videos.

The same records as for sensor clips (dmd.records), so the switcher trains and calibrates
unchanged. Clip ids are `file@start`; the group of a clip is its video (a recording), so
group-wise validation never splits one video across folds.
"""

from __future__ import annotations

import numpy as np

from edgeswitch.dmd.records import DMDRecords
from edgeswitch.errors import DataError, ModelError
from edgeswitch.models.base import check_same_classes, model_identity
from edgeswitch.video.source import ClipSpec, FolderRun, VideoClip, folder_clips


def _batches(clips, size: int):
    batch: list[VideoClip] = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def distill_video(edge, cloud, videos, spec: ClipSpec, batch_size: int = 8,
                  progress: bool = False, report: FolderRun | None = None) -> DMDRecords:
    """DMD records for every clip of `videos` (a folder, glob, file or list). Videos that
    cannot be decoded are listed in `report.failed`, clips the cloud did not answer in
    `report.failed_clips` (a rerun over those videos fills them in); both are left out."""
    from tqdm.auto import tqdm

    check_same_classes(edge, cloud)
    report = report if report is not None else FolderRun()
    ids, groups, edge_p, edge_e, cloud_p = [], [], [], [], []
    bar = tqdm(desc="DMD clips", unit="clip", disable=not progress, leave=False)
    for batch in _batches(folder_clips(videos, spec, report), batch_size):
        out = edge.outputs(batch)
        try:
            cloud_batch = np.asarray(cloud.predict_proba(batch))
        except ModelError as exc:  # one cloud failure costs its batch, not the whole run
            report.failed_clips.update({c.clip_id: str(exc) for c in batch})
            bar.update(len(batch))
            continue
        edge_p.append(out.proba)
        edge_e.append(out.embedding)
        cloud_p.append(cloud_batch)
        ids += [c.clip_id for c in batch]
        groups += [c.source for c in batch]
        bar.update(len(batch))
    bar.close()
    if not ids:
        raise DataError(f"no clip of {videos} has both answers: videos "
                        f"{report.failed or 'shorter than one clip'}; cloud failures "
                        f"{list(report.failed_clips.values())[:3]}")
    return DMDRecords(ids=np.asarray(ids), groups=np.asarray(groups),
                      edge_proba=np.concatenate(edge_p).astype(np.float32),
                      edge_embedding=np.concatenate(edge_e).astype(np.float32),
                      cloud_proba=np.concatenate(cloud_p).astype(np.float32),
                      classes=tuple(edge.classes_), edge_model=model_identity(edge),
                      cloud_model=model_identity(cloud))
