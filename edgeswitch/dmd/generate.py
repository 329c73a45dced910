"""DMD data generation in memory: run edge and cloud over unlabelled clips and record how they
agree (the one runner, dmd.runner, with a batch source and an in-memory sink).

`distill` reads clips, ids and groups only. It never touches `ClipBatch.y`: it works on the
label-free view of the batch, so labelled and unlabelled pools give identical records.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

from edgeswitch.cloud.client import CloudClient
from edgeswitch.data.clips import ClipBatch
from edgeswitch.dmd.records import DMDRecords
from edgeswitch.dmd.runner import run
from edgeswitch.dmd.sinks import MemorySink
from edgeswitch.dmd.sources import LiveModels, MemorySource
from edgeswitch.models.base import ClipClassifier


def distill(edge: ClipClassifier, cloud: ClipClassifier | CloudClient, clips: ClipBatch,
            batch_size: int | None = None, progress: bool = False,
            dataset: str = "") -> DMDRecords:
    """Edge and cloud outputs for every clip of an unlabelled pool, as DMD records
    (`batch_size` None: `DistillConfig.batch_size`) that name `dataset`, the data set the clips
    came from. A cloud that does not answer raises `runner.CloudDownError`; see the runner's
    failure policy."""
    sink = MemorySink()
    run(MemorySource(clips), LiveModels(edge, cloud), sink, batch_size, progress=progress)
    if sink.failed_clips:  # the policy reports them; this API returns records only
        warnings.warn(f"DMD: {len(sink.failed_clips)} clips without a usable cloud answer "
                      f"are left out, e.g. {next(iter(sink.failed_clips.items()))}",
                      stacklevel=2)
    return replace(sink.records, dataset=dataset)


def agreement_by_class(records: DMDRecords) -> dict[str, dict[str, float]]:
    """Label-noise diagnostic without labels: how often the cloud confirms each edge class."""
    out = {}
    for k, name in enumerate(records.classes):
        mask = records.edge_label == k
        out[name] = {"n": int(mask.sum()),
                     "agreement": float(records.agree[mask].mean()) if mask.any() else None}
    return out
