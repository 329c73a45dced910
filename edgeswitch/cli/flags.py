"""Command-line flags generated from the config schema (edgeswitch/config.py).

`config_flags(p, "runtime")` adds one flag per field of the [runtime] table: its name from the
field (`deadline_ms` -> `--deadline-ms`), its type, choices and help from the schema, and the
config default in the help. Every generated flag defaults to None, so a flag left out keeps
what the preset and `--config FILE` say; `resolve_config(args)` applies the flags given, and
the schema checks the result once. No default is written twice.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, Literal, get_args, get_origin

from edgeswitch import config

FLAG_PREFIX = "cfg:"  # argparse dest of a generated flag: "cfg:runtime.deadline_ms"


def _defaults(table: str):
    """The default instance of a config table ("" = the top level)."""
    if not table:
        return config.RunConfig()
    return {f.name: f for f in fields(config.RunConfig)}[table].default_factory()


def _info(cls, name: str):
    return cls.__pydantic_fields__[name]


def _base_type(annotation) -> tuple[type, tuple | None]:
    """(python type, choices) of a field: Literal -> its values, list[X] -> X."""
    if get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if origin is Literal:
        return str, get_args(annotation)
    if origin is list:
        inner, choices = _base_type(get_args(annotation)[0])
        return list[inner], choices
    if origin in (typing.Union, types.UnionType):
        return _base_type(next(a for a in get_args(annotation) if a is not type(None)))
    return annotation, None


def _default_text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return repr(value) if value == "" else str(value)


def config_flags(p: argparse.ArgumentParser, table: str, only: tuple[str, ...] | None = None,
                 prefix: str = "", title: str | None = None) -> None:
    """Flags for the fields of config table `table` ("" = the top level), all or `only`."""
    defaults = _defaults(table)
    cls = type(defaults)
    group = p.add_argument_group(title or (f"[{table}] settings" if table else None))
    for f in fields(cls):
        default = getattr(defaults, f.name)
        if (only is not None and f.name not in only) or isinstance(default, dict) \
                or is_dataclass(default):  # tables and free-form tables are not flags
            continue
        info = _info(cls, f.name)
        kind, choices = _base_type(info.annotation)
        key = f"{table}.{f.name}" if table else f.name
        kwargs: dict[str, Any] = {"default": None, "dest": FLAG_PREFIX + key}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is list:
            kwargs.update(nargs="+", type=get_args(kind)[0],
                          metavar=get_args(kind)[0].__name__.upper())
        else:
            kwargs.update(type=kind, metavar=kind.__name__.upper())
        if choices:
            kwargs["choices"] = choices
            kwargs.pop("metavar", None)
        kwargs["help"] = (f"{info.description} (default: {_default_text(default)}; config "
                          f"key {key})").replace("%", "%%")
        group.add_argument("--" + prefix + f.name.replace("_", "-"), **kwargs)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The generated flags given on the command line, as dotted config keys."""
    return {dest[len(FLAG_PREFIX):]: value for dest, value in vars(args).items()
            if dest.startswith(FLAG_PREFIX) and value is not None}


def resolve_config(args: argparse.Namespace, dataset: str | None = None) -> config.RunConfig:
    """The run's config, made once per command line: the data set's preset (a step's --data
    names the data set; without --data, `dataset`: e.g. the one DMD records came from), then
    `--config FILE`, then the flags given. `--config` is optional on every command that has
    it."""
    dataset = getattr(args, "data", None) or dataset
    cache = args.__dict__.setdefault("_configs", {})  # one per data set (the preset differs)
    if dataset not in cache:
        cache[dataset] = config.load_config(getattr(args, "config", None), flag_values(args),
                                            dataset=dataset)
    return cache[dataset]


class _Renamed(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed: use {self.const}")


def renamed_flag(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """A flag's old name, hidden from --help: given, it is argparse's usage error naming the
    new one (not "unrecognized arguments")."""
    p.add_argument(old, action=_Renamed, const=new, nargs="?", help=argparse.SUPPRESS,
                   dest=f"renamed:{old}")


def config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="TOML config file (see configs/watch.toml); flags given override it")
