"""Optional dependencies: which extra of pyproject.toml installs which package, and the one
error for a missing one.

A device installs only the core (numpy, onnxruntime, httpx, pydantic, tqdm): enough for
`classify` and `watch` with a bundle. Training, DMD, reports and the bundled data sets need
the 'train' extra, the cloud server 'serve', and so on. Heavy packages are imported inside
the functions that use them, so a missing one surfaces only where it is needed, and the CLI
turns it into one line naming the extra to install (cli/main.py), never a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

from edgeswitch.errors import EdgeSwitchError

# import name -> the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF: dict[str, str] = {
    **dict.fromkeys(("torch", "pandas", "pyarrow", "matplotlib", "scipy", "sklearn",
                     "seglearn", "pyts", "onnx"), "train"),
    **dict.fromkeys(("fastapi", "uvicorn", "starlette", "prometheus_client"), "serve"),
    **dict.fromkeys(("av", "ai_edge_litert", "skvideo", "PIL"), "video"),
    "ray": "ray", "transformers": "hf", "openai": "openai",
}


class MissingExtra(EdgeSwitchError):
    """An optional package this needs is not installed: `extra` names what to install."""

    def __init__(self, extra: str, module: str | None = None, what: str = "this") -> None:
        self.extra, self.module = extra, module
        super().__init__(self.message(what))

    def message(self, what: str) -> str:
        """`what` needs the extra, and the command that installs it."""
        return f"{what} needs the '{self.extra}' extra: pip install 'edgeswitch[{self.extra}]'"


def need_extra(module: str, extra: str | None = None) -> None:
    """Raise MissingExtra unless `module` is importable (found, not imported: cheap)."""
    if sys.modules.get(module) is not None:  # imported already
        return
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a None in sys.modules
        found = False
    if not found:
        raise MissingExtra(extra or EXTRA_OF[module], module)


def require_extra(extra: str) -> None:
    """Raise MissingExtra unless every package of `extra` that edgeswitch imports is here."""
    for module, of in EXTRA_OF.items():
        if of == extra:
            need_extra(module, extra)


def missing_extra(exc: ImportError) -> MissingExtra | None:
    """The MissingExtra that an ImportError means, when the module it could not find is one
    an extra installs (None: another import failed, a bug or a broken install)."""
    top = (exc.name or "").split(".")[0]
    return MissingExtra(EXTRA_OF[top], top) if isinstance(exc, ModuleNotFoundError) \
        and top in EXTRA_OF else None
