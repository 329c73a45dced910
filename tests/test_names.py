"""Names with one meaning: each renamed setting, flag and constant, and what an old name gets.

Before: `--deadline-ms` was three config keys (classify's 500 ms, distill's and watch's 60 s),
`--engine` the server of serve-cloud and the DMD engine of distill, `--ray-address` two keys,
`watch --metrics FILE` a JSON summary beside the Prometheus `--metrics-port`, and `ROUTERS`
both the offload routers and the FastAPI routers.
"""

from __future__ import annotations

import pytest

from edgeswitch.cli.main import build_parser
from edgeswitch.config import RENAMED, load_config
from edgeswitch.errors import EdgeSwitchError


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_an_old_config_key_is_an_error_naming_the_new_one(old, tmp_path):
    table, key = old.split(".")
    path = tmp_path / "old.toml"
    path.write_text(f"[{table}]\n{key} = {'1.0' if 'ms' in key else repr('ray')}\n")
    with pytest.raises(EdgeSwitchError, match=f"{old}: renamed: it is now {RENAMED[old]}"):
        load_config(path)


def test_each_renamed_key_exists_under_its_new_name():
    cfg = load_config().to_dict()
    for new in RENAMED.values():
        table, key = new.split(".")
        assert key in cfg[table], new


@pytest.mark.parametrize("argv, new", [
    (["serve-cloud", "--cloud", "c.onnx", "--engine", "ray"], "--server"),
    (["distill", "--data", "d.npz", "--edge", "e.onnx", "--deadline-ms", "5"],
     "--cloud-timeout-ms"),
    (["watch", "v.mp4", "--deadline-ms", "5"], "--vlm-deadline-ms"),
    (["watch", "v.mp4", "--metrics", "m.json"], "--summary"),
])
def test_an_old_flag_is_a_usage_error_naming_the_new_one(argv, new, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert f"was renamed: use {new}" in capsys.readouterr().err


def test_the_new_flags_set_their_own_keys():
    parse = build_parser().parse_args
    serve = parse(["serve-cloud", "--cloud", "c.onnx", "--server", "ray", "--ray-address", "auto"])
    distill = parse(["distill", "--data", "d.npz", "--edge", "e.onnx", "--engine", "ray",
                     "--ray-address", "auto", "--cloud-timeout-ms", "5"])
    watch = parse(["watch", "v.mp4", "--vlm-deadline-ms", "7", "--summary", "s.json"])
    assert vars(serve)["cfg:serve.server"] == "ray"
    assert vars(serve)["cfg:ray.address"] == vars(distill)["cfg:ray.address"] == "auto"
    assert vars(distill)["cfg:distill.engine"] == "ray"
    assert vars(distill)["cfg:distill.cloud_timeout_ms"] == 5
    assert vars(watch)["cfg:video.vlm_deadline_ms"] == 7 and watch.summary == "s.json"


def test_routers_means_the_offload_routers_only():
    pytest.importorskip("fastapi")
    import edgeswitch.serving.app as app
    from edgeswitch.switcher.routers import ROUTERS

    assert not hasattr(app, "ROUTERS")
    assert "max_prob" in ROUTERS and len(app.API_ROUTERS) == 3

