"""Soak: a real serve-cloud process with fault injection and per-device tokens under mixed good,
bad and slow requests from concurrent clients (benchmarks/soak.py). No growth in open file
descriptors or threads after the warm-up, RSS growth under 10%, no unexpected 5xx or dropped
connection, and a good answer afterwards. 60 s by default (a 12 s warm-up, 3 rounds of 16 s:
each check still sees three quiet points after load; the long soaks are the benchmark's, 150 s
and 600 s); EDGESWITCH_SOAK_S=SECONDS for a longer run."""

import os

import numpy as np
import pytest

from benchmarks.soak import report, soak

pytestmark = pytest.mark.slow
SECONDS = float(os.environ.get("EDGESWITCH_SOAK_S", "60"))


def test_soak_mixed_traffic_with_faults(bm_files, bm_models, basicmotions):
    cloud = bm_models[1]
    X = np.ascontiguousarray(basicmotions.X, np.float32)
    res = soak(bm_files["cloud"], X, cloud.predict_proba(X), tuple(cloud.classes_),
               seconds=SECONDS, clients=6, rounds=3)
    print("\n" + report(res))
    out = res["outcomes"]
    # the mix really ran: every kind of request, the faults hit, some clients gave up
    for key in ("classify 200", "chat 200", "bad_token 401", "ops 200", "abandon gave up"):
        assert out.get(key, 0) > 0, key
    assert sum(v for k, v in out.items() if k.startswith("bad_body 4")) > 0
    assert sum(v for k, v in out.items() if "(injected)" in k) > 0
    assert res["unexpected"] == [], res["unexpected"]
    growth = res["growth_after_warmup"]
    assert res["checks"]["fds"], f"open fds grew by {growth['fds']}"
    assert res["checks"]["threads"], f"threads grew by {growth['threads']}"
    assert res["checks"]["rss"], f"RSS grew by {growth['rss_pct']}%"
    assert res["checks"]["good_after"], res["final_check"]
    assert res["checks"]["no_token_in_log"] and res["checks"]["no_traceback_in_log"]
    assert res["token_file_reloads"] >= 3  # a device added and one revoked after each phase
