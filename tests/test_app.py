"""The FastAPI app in process (fastapi's TestClient): what needs no real server."""

import numpy as np
import pytest

from edgeswitch.cloud.wire import encode_clips


class Broken:
    """A backend that returns one row too many: the rows no longer match the clips."""

    classes_ = ("a", "b")
    name = "broken"
    clip_shape_ = (5, 3)

    def predict_proba(self, X):
        return np.full((len(X) + 1, 2), 0.5)


@pytest.mark.parametrize("max_batch", [1, 32])  # thread pool path and batcher path
def test_a_backend_with_the_wrong_shape_is_a_500_not_an_answer(max_batch):
    from fastapi.testclient import TestClient

    from edgeswitch.config import ServeConfig
    from edgeswitch.serving.app import create_app

    app = create_app(Broken(), ServeConfig(max_batch=max_batch))
    with TestClient(app) as client:
        r = client.post("/v1/classify", json={"clips": encode_clips(np.zeros((3, 5, 3),
                                                                            np.float32))})
    assert r.status_code == 500 and r.json()["error"]["code"] == "backend_error"
