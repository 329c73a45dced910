"""One config schema: strict values, flags generated from it, and flags that never override
the file unless given. Each test here is a regression test for a bug of the hand-written
config and flags (they fail on the code before the schema)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeswitch.cli.main import build_parser, main
from edgeswitch.config import (
    CalibrationConfig,
    RunConfig,
    SwitcherConfig,
    VideoConfig,
    load_config,
)
from edgeswitch.errors import EdgeSwitchError

ROOT = Path(__file__).resolve().parents[1]


def _toml(tmp_path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "key"), [
    ('[edge]\nlr = "fast"\n', "edge.lr"),                        # was a raw TypeError
    ('[calibration]\nadaptive = "no"\n', "calibration.adaptive"),  # was accepted, as ON
    ('[switcher]\nfeatures = ["proba", "nope"]\n', "switcher.features"),  # failed after training
    ("[benchmark]\nfolds = 2.5\n", "benchmark.folds"),
    ("[serve]\nmax_batch = true\n", "serve.max_batch"),
    ("[runtime]\nbackoff_ms = 300.0\n", "backoff_ms must be <= backoff_max_ms"),
    ("[distill]\nworkerz = 3\n", "distill.workerz: unknown key"),
])
def test_a_bad_value_is_an_error_naming_its_key(tmp_path, text, key):
    with pytest.raises(EdgeSwitchError, match=key.replace(".", r"\.")):
        load_config(_toml(tmp_path, text))


def test_the_file_is_read_exactly(tmp_path):
    cfg = load_config(_toml(tmp_path, "[calibration]\nadaptive = false\nrate = 1\n"))
    assert cfg.calibration.adaptive is False and cfg.calibration.rate == 1.0


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _config_flags(p: argparse.ArgumentParser):
    from edgeswitch.cli.flags import FLAG_PREFIX

    return [a for a in p._actions if a.dest.startswith(FLAG_PREFIX)]


def test_every_flag_default_is_the_config_default():
    from edgeswitch.cli.flags import FLAG_PREFIX, _default_text, _defaults

    def field_default(key: str):
        """The schema default of a dotted config key, as a flag's help shows it."""
        table, _, name = key.rpartition(".")
        return getattr(_defaults(table), name)

    seen = 0
    for name, p in _subcommands(build_parser()).items():
        for action in _config_flags(p):
            key = action.dest[len(FLAG_PREFIX):]
            # None: a flag left out keeps the preset's and the file's value
            assert action.default is None, (name, action.option_strings)
            assert f"default: {_default_text(field_default(key))};" in action.help, (name, key)
            seen += 1
    assert seen > 50


# Flags that name the same setting of different tables: each command has one of them, and it
# means the same thing there (the epochs of the model it trains).
SHARED_FLAGS = {
    "--epochs": {"switcher.epochs", "pose.epochs"},
}


def test_flags_have_one_meaning_each():
    """A flag name is one setting (one config key) on every command, but for the few listed
    in SHARED_FLAGS; `--model` is a served model's name everywhere (it was an ONNX path in
    serve-cloud)."""
    meaning: dict[str, set[str]] = {}
    for p in _subcommands(build_parser()).values():
        for action in p._actions:
            if action.help == argparse.SUPPRESS:  # an old name that only says the new one
                continue
            for opt in action.option_strings:
                meaning.setdefault(opt, set()).add(action.dest.removeprefix("cfg:"))
    clashes = {o: d for o, d in meaning.items() if len(d) > 1}
    assert clashes == SHARED_FLAGS
    commands = _subcommands(build_parser())
    for name, p in commands.items():
        for action in p._actions:
            if "--model" in action.option_strings:
                assert "name" in action.help, name
    args = commands["serve-cloud"].parse_args(["--cloud", "cloud.onnx", "--model", "m1"])
    assert args.cloud == "cloud.onnx" and args.model == "m1"


def test_every_step_command_takes_a_config():
    for name in ("demo", "benchmark", "train-models", "distill", "train-switcher", "calibrate",
                 "evaluate", "serve-cloud", "classify", "watch", "train-pose"):
        p = _subcommands(build_parser())[name]
        assert any("--config" in a.option_strings for a in p._actions), name


def _parse(*argv):
    return build_parser().parse_args(list(argv))


def test_a_flag_left_out_keeps_the_file_value(tmp_path):
    from edgeswitch.cli.flags import resolve_config

    cal = _toml(tmp_path, "[calibration]\nrate = 0.6\n[switcher]\ntarget = \"soft\"\n")
    # calibrate's --rate had a hidden default of 0.3 that beat the file's 0.6
    args = _parse("calibrate", "--switcher", "sw.npz", "--config", str(cal))
    assert resolve_config(args).calibration.rate == 0.6
    assert resolve_config(_parse("calibrate", "--switcher", "s")).calibration == \
        CalibrationConfig()
    args = _parse("calibrate", "--switcher", "s", "--config", str(cal), "--rate", "0.2")
    assert resolve_config(args).calibration.rate == 0.2
    # train-switcher --target defaulted to soft while the config said hard
    assert resolve_config(_parse("train-switcher", "--dmd", "d")).switcher == SwitcherConfig()
    args = _parse("train-switcher", "--dmd", "d", "--config", str(cal))
    assert resolve_config(args).switcher.target == "soft"
    args = _parse("train-switcher", "--dmd", "d", "--config", str(cal), "--target", "gain",
                  "--epochs", "7")
    assert (resolve_config(args).switcher.target, resolve_config(args).switcher.epochs) == \
        ("gain", 7)


def test_a_bad_flag_value_is_a_clear_error(capsys):
    assert main(["calibrate", "--switcher", "s", "--dmd", "d", "--rate", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "calibration.rate" in err and "less than or equal to 1" in err


def test_calibrate_offloads_the_config_files_rate(tmp_path, bm_models, bm_splits):
    """End to end: `calibrate --config` with rate 0.6 offloads 60% (it offloaded 30%)."""
    from edgeswitch.dmd import distill
    from edgeswitch.switcher import LinearSwitcher

    edge, cloud = bm_models
    records = distill(edge, cloud, bm_splits.pool)
    rec_path = records.to_parquet(tmp_path / "calib.parquet")
    sw = LinearSwitcher().fit(records.edge, records.target("hard"))
    sw.save(tmp_path / "sw.npz")
    cfg = _toml(tmp_path, "[calibration]\nrate = 0.6\n")
    out = tmp_path / "op.json"
    assert main(["calibrate", "--dmd", str(rec_path), "--switcher", str(tmp_path / "sw.npz"),
                 "--config", str(cfg), "--out", str(out)]) == 0
    from edgeswitch.switcher import OperatingPoint

    op = OperatingPoint.load(out)
    assert op.calib_offload_rate == pytest.approx(0.6, abs=1.5 / len(records))


def test_video_clip_defaults_are_the_config_defaults():
    """ClipSpec said 2 s / 8 frames / 10 fps while the CLI said 4 s / 32 frames / 8 fps."""
    from edgeswitch.cli.video import clip_spec
    from edgeswitch.video.source import ClipSpec

    assert ClipSpec() == ClipSpec.from_config(VideoConfig())
    assert clip_spec(_parse("watch", "v.mp4", "--switcher", "s", "--op", "o")) == ClipSpec()
    args = _parse("watch", "v.mp4", "--switcher", "s", "--op", "o", "--size", "64x48")
    assert clip_spec(args).size == (64, 48)


def test_a_uea_ts_file_is_data_and_an_mpeg_ts_file_is_video(tmp_path):
    """`.ts` is UEA text and MPEG-TS video; `distill --data X_TRAIN.ts` took the video path."""
    from edgeswitch.data.files import is_video, is_video_source

    uea = tmp_path / "Tiny_TRAIN.ts"
    uea.write_text("@problemName Tiny\n@timeStamps false\n@univariate true\n@classLabel true "
                   "a b\n@data\n1.0,2.0,3.0:a\n2.0,1.0,0.0:b\n")
    assert not is_video(uea) and not is_video_source(str(uea))
    av = pytest.importorskip("av")
    video = tmp_path / "clip.ts"
    with av.open(str(video), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(4):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert is_video(video) and is_video_source(str(video))


def test_a_virtualenv_in_the_checkout_is_ignored():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    res = subprocess.run(["git", "check-ignore", "-q", ".venv/"], cwd=ROOT, timeout=30)
    assert res.returncode == 0, ".venv/ shows as untracked"


def test_a_config_built_in_code_is_validated_like_a_file():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="splits must be 4 positive shares"):
        RunConfig(splits=[1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        RunConfig(calibration={"rate": 2.0})


def test_a_flag_the_run_would_ignore_is_refused(tmp_path, bm_files, capsys):
    """Remote-only settings with an in-process cloud, video settings on sensor data, VLM
    settings with a non-VLM cloud and --split on videos were silently ignored."""
    from edgeswitch.cli.video import video_cloud_args

    common = ["--edge", str(bm_files["edge"]), "--cloud", str(bm_files["cloud"])]
    assert main(["distill", "--data", "basicmotions", *common, "--cloud-timeout-ms", "100",
                 "--out", str(tmp_path / "d.parquet")]) == 2
    assert "--cloud-timeout-ms applies to --cloud-url only" in capsys.readouterr().err
    assert main(["distill", "--data", "basicmotions", *common, "--clip-s", "2",
                 "--out", str(tmp_path / "d.parquet")]) == 2
    assert "--clip-s applies to video input only" in capsys.readouterr().err
    from edgeswitch.cli.serve import make_cloud

    classify = _parse("classify", "--data", "d.npz", "--edge", "e.onnx", "--switcher", "s",
                      "--op", "o", "--cloud", "c.onnx", "--retries", "1", "--ca-cert", "ca")
    with pytest.raises(EdgeSwitchError, match="--retries, --ca-cert apply to --cloud-url only"):
        make_cloud(classify, ("a", "b"), RunConfig().runtime)
    watch = ["watch", "cam.mp4", "--switcher", "s.npz", "--op", "op.json", "--cloud",
             "yolo-fall"]
    for extra in (["--vlm-frames", "2"], ["--no-logprobs"], ["--retries", "0"],
                  ["--token-file", "t"]):
        with pytest.raises(EdgeSwitchError, match="to --cloud-url only"):
            video_cloud_args(_parse(*watch, *extra))
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"")
    assert main(["distill", "--data", str(videos), "--edge", "nfd", "--cloud", "yolo-fall",
                 "--split", "calib", "--out", str(tmp_path / "v.parquet")]) == 2
    assert "--split does not apply" in capsys.readouterr().err


def test_the_names_the_schema_knows_are_the_code_s():
    """The schema names architectures, switcher families and feature groups without importing
    the code that implements them (imports flow down); these must stay the same sets."""
    from typing import get_args

    from edgeswitch.config import ARCHS, FEATURE_GROUPS, SwitcherFamily
    from edgeswitch.models.nets import ARCHITECTURES
    from edgeswitch.switcher import features
    from edgeswitch.switcher.base import SWITCHERS

    assert set(ARCHITECTURES) == set(ARCHS)
    assert set(SWITCHERS) == set(get_args(SwitcherFamily))
    assert features.FEATURE_GROUPS is FEATURE_GROUPS


def test_a_keyword_left_none_keeps_the_flag_value():
    """resolve_config passes a step's --data as `dataset`; None (no --data) must not hide the
    --dataset flag of demo and benchmark."""
    assert load_config(overrides={"dataset": "basicmotions"}, dataset=None).dataset == \
        "basicmotions"
    assert load_config(overrides={"seed": 3}, dataset="basicmotions").seed == 3
