"""configs/watch.toml documents every key; it must stay equal to the built-in preset."""

from pathlib import Path

from edgeswitch.config import load_config, preset

ROOT = Path(__file__).resolve().parents[1]


def test_watch_toml_equals_the_preset():
    assert load_config(ROOT / "configs" / "watch.toml").to_dict() == preset("watch").to_dict()


def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        # arch_params and split_groups are free-form tables: their keys are data, not schema
        if isinstance(v, dict) and k not in ("arch_params", "split_groups"):
            out |= _keys(v, f"{prefix}{k}.")
        else:
            out.add(prefix + k)
    return out


def test_watch_toml_lists_every_key():
    import tomllib

    written = tomllib.loads((ROOT / "configs" / "watch.toml").read_text())
    assert _keys(written) == _keys(preset("watch").to_dict())
