"""DMD data generation: run edge and cloud over unlabelled clips and record how they agree.

`distill` reads clips, ids and groups only. It never touches `ClipBatch.y`: it works on the
label-free view of the batch, so labelled and unlabelled pools give identical records.
"""

from __future__ import annotations

import numpy as np

from edgeswitch.cloud.client import CloudClient, InProcessCloud
from edgeswitch.data.clips import ClipBatch
from edgeswitch.dmd.records import DMDRecords
from edgeswitch.models.base import ClipClassifier, check_same_classes, model_identity


def distill(edge: ClipClassifier, cloud: ClipClassifier | CloudClient, clips: ClipBatch,
            batch_size: int = 512, progress: bool = False) -> DMDRecords:
    """Edge and cloud outputs for every clip of an unlabelled pool, as DMD records."""
    from tqdm.auto import tqdm

    client = cloud if isinstance(cloud, CloudClient) else InProcessCloud(cloud)
    check_same_classes(edge, client)
    pool = clips.without_labels()  # DMD is unsupervised: drop labels before anything runs
    edge_p, edge_e, cloud_p = [], [], []
    for start in tqdm(range(0, len(pool), batch_size), desc="DMD", disable=not progress,
                      leave=False):
        X = pool.X[start : start + batch_size]
        out = edge.outputs(X)
        edge_p.append(out.proba)
        edge_e.append(out.embedding)
        cloud_p.append(client.predict_proba(X))
    return DMDRecords(
        ids=pool.ids, groups=pool.groups,
        edge_proba=np.concatenate(edge_p).astype(np.float32),
        edge_embedding=np.concatenate(edge_e).astype(np.float32),
        cloud_proba=np.concatenate(cloud_p).astype(np.float32),
        classes=tuple(edge.classes_), edge_model=model_identity(edge),
        cloud_model=model_identity(getattr(client, "model", client)),
    )


def agreement_by_class(records: DMDRecords) -> dict[str, dict[str, float]]:
    """Label-noise diagnostic without labels: how often the cloud confirms each edge class."""
    out = {}
    for k, name in enumerate(records.classes):
        mask = records.edge_label == k
        out[name] = {"n": int(mask.sum()),
                     "agreement": float(records.agree[mask].mean()) if mask.any() else None}
    return out
