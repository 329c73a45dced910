"""The device in the browser (`edgeswitch device-page`) and the cloud's CORS option.

The CORS tests run in-process (fast). The browser tests (slow) drive headless Chromium, the
OS package through playwright as tests/test_dashboard_browser.py does, against real
`serve-cloud` and `device-page` processes on loopback.
"""

from __future__ import annotations

import numpy as np
import pytest

PAGE_ORIGIN = "http://127.0.0.1:8060"


class _Model:
    classes_ = ("a", "b")
    name = "tiny"
    clip_shape_ = (4, 2)

    def predict_proba(self, X):
        return np.tile([0.25, 0.75], (len(X), 1))


def _classify(client, origin: str, token: str = "t"):
    from edgeswitch.cloud.wire import encode_clips

    return client.post("/v1/classify", json={"clips": encode_clips(np.zeros((1, 4, 2)))},
                       headers={"Origin": origin, "Authorization": f"Bearer {token}"})


def _preflight(client, origin: str):
    return client.options("/v1/classify", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})


def test_cors_is_off_by_default():
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import create_app

    with TestClient(create_app(_Model(), token="t")) as client:
        r = _classify(client, PAGE_ORIGIN)
        assert r.status_code == 200  # answered (a browser would refuse to show it) ...
        assert "access-control-allow-origin" not in r.headers  # ... with no CORS header
        r = _preflight(client, PAGE_ORIGIN)
        assert "access-control-allow-origin" not in r.headers
        assert r.status_code == 401  # no CORS: a preflight is a request without a token


def test_cors_allows_the_configured_origins_only():
    from fastapi.testclient import TestClient

    from edgeswitch.config import ServeConfig
    from edgeswitch.serving.app import create_app

    app = create_app(_Model(), ServeConfig(cors_origins=[PAGE_ORIGIN]), token="t")
    with TestClient(app) as client:
        r = _preflight(client, PAGE_ORIGIN)  # no token needed to ask
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == PAGE_ORIGIN
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = _classify(client, PAGE_ORIGIN)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == PAGE_ORIGIN
        r = _classify(client, PAGE_ORIGIN, token="wrong")  # the page can read the refusal
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == PAGE_ORIGIN
        other = "http://127.0.0.1:9999"
        assert "access-control-allow-origin" not in _classify(client, other).headers
        assert _preflight(client, other).status_code == 400


def test_a_cors_origin_must_be_an_origin(tmp_path):
    from edgeswitch.config import load_config
    from edgeswitch.errors import EdgeSwitchError

    path = tmp_path / "c.toml"
    path.write_text('[serve]\ncors_origins = ["http://127.0.0.1:8060/page"]\n')
    with pytest.raises(EdgeSwitchError, match="cors_origins"):
        load_config(path)
