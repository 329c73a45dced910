"""What the package imports is declared in pyproject.toml, and requirements/lock.txt pins what
pyproject.toml declares (scripts/lock.py makes the lock; its --check is what runs here)."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import lock  # noqa: E402  (scripts/lock.py)

# import name -> distribution, where they differ
DISTRIBUTION = {"PIL": "pillow", "sklearn": "scikit-learn", "skvideo": "scikit-video",
                "ai_edge_litert": "ai-edge-litert", "prometheus_client": "prometheus-client"}
# imported directly, installed by a declared distribution that is built on it (FastAPI's
# documented way to reach Starlette's classes; the tokenizer of a transformers checkpoint)
PROVIDED_BY = {"starlette": "fastapi", "tokenizers": "transformers"}
# what a device must not need: `edgeswitch classify` and `watch` run a bundle without them
HEAVY = {"torch", "pandas", "pyarrow", "matplotlib", "seglearn", "pyts", "scipy",
         "scikit-learn", "onnx"}
# this repository's own modules (edgeswitch, tests, benchmarks, scripts/*.py)
LOCAL = {p.stem for p in [*ROOT.iterdir(), *(ROOT / "scripts").glob("*.py")]}


def _imports(folder: Path) -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere under `folder` (lazy imports included)
    -> the files' first path part under `folder`."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL:
                    found.setdefault(top, set()).add(path.relative_to(folder).parts[0])
    return found


def _declared() -> tuple[set[str], set[str]]:
    """Names of the distributions pyproject.toml declares: (core, core and every extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {lock._name(r) for r in project["dependencies"]}
    extras = {lock._name(r) for rs in project["optional-dependencies"].values() for r in rs}
    return core, core | extras


def _distribution(module: str) -> str:
    module = PROVIDED_BY.get(module, module)
    return lock._name(DISTRIBUTION.get(module, module))


@pytest.mark.parametrize("folder", ["edgeswitch", "tests"])
def test_every_third_party_import_is_declared(folder):
    _, declared = _declared()
    imported = _imports(ROOT / folder)
    assert "numpy" in imported  # the walk sees imports at all
    missing = {m: sorted(where) for m, where in imported.items()
               if _distribution(m) not in declared}
    assert not missing, f"imported under {folder}/ but not declared in pyproject.toml: {missing}"


def test_the_core_is_what_a_device_needs_and_every_other_import_names_its_extra():
    """The core dependencies are the device's (numpy, onnxruntime, httpx, pydantic, tqdm; no
    training stack), and every other third-party module imported under edgeswitch/ is one
    that edgeswitch.extras.EXTRA_OF maps to an extra which declares its distribution: the
    error for a missing package then names the extra that really brings it."""
    from edgeswitch.extras import EXTRA_OF

    core, _ = _declared()
    assert not core & HEAVY, f"heavy packages in the core: {sorted(core & HEAVY)}"
    assert {"numpy", "onnxruntime", "httpx", "pydantic", "tqdm"} <= core
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    imported = _imports(ROOT / "edgeswitch")
    assert {"torch", "sklearn", "pyarrow"} <= imported.keys()  # the walk sees lazy imports
    wrong = {}
    for module, where in imported.items():
        if _distribution(module) in core:
            continue
        extra = EXTRA_OF.get(module)
        declared = {lock._name(r) for r in optional.get(extra, [])}
        if _distribution(module) not in declared:
            wrong[module] = (extra, sorted(where))
    assert not wrong, f"not core, and EXTRA_OF names no extra that declares them: {wrong}"
    assert {m for m, e in EXTRA_OF.items() if e == "train"} == {
        "torch", "pandas", "pyarrow", "matplotlib", "scipy", "sklearn", "seglearn", "pyts",
        "onnx"}


def test_modules_provided_by_a_declared_distribution_come_with_it():
    from importlib.metadata import PackageNotFoundError, requires

    for module, dist in PROVIDED_BY.items():
        try:
            needs = {lock._name(r) for r in requires(dist) or [] if "extra ==" not in r}
        except PackageNotFoundError:
            continue  # that extra is not installed here
        assert lock._name(module) in needs, f"{dist} does not require {module}"


def test_the_lock_matches_pyproject():
    assert lock.check() == 0, "python scripts/lock.py --check: see the lines above"


def test_the_lock_check_fails_when_pyproject_and_the_lock_disagree():
    deps = lock.project_deps()
    pins, stamp = lock.read_lock()
    assert lock.problems(deps, pins, stamp) == []
    assert len(pins) > 100 and pins["torch"] == "2.13.0+cpu"
    assert not [n for n in pins if n.startswith("nvidia")]  # the CPU wheel pulls no CUDA
    edited = deps | {"dependencies": deps["dependencies"] + ["left-pad>=1"]}
    found = lock.problems(edited, pins, stamp)
    assert any("changed since the lock" in p for p in found)
    assert any("'left-pad>=1' is not in the lock" in p for p in found)
    narrowed = deps | {"dependencies": [r if not r.startswith("numpy") else "numpy<1"
                                        for r in deps["dependencies"]]}
    assert any("outside 'numpy<1'" in p for p in lock.problems(narrowed, pins,
                                                               lock.digest(narrowed)))


def test_the_readme_commands_and_ci_install_with_the_lock():
    """Both README commands and .ci/run install the project with requirements/lock.txt as
    constraints, and .ci/run runs the README's test command as written."""
    import re

    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for block in re.findall(r"```bash\n(.*?)```", readme, re.S)
                for line in block.splitlines()
                if line.startswith(("pip install", "bash scripts")) and " && " in line]
    assert len(commands) == 2, commands  # "The two commands": the main job's and the tests'
    assert any(c.endswith("edgeswitch demo") for c in commands), commands
    test_command = [c for c in commands if "pytest" in c]
    assert len(test_command) == 1 and test_command[0] in ci.splitlines()
    for line in commands + [c for c in ci.splitlines() if '-e "' in c]:
        for install in re.findall(r'pip install [^&]*-e "[^"]*"', line):
            assert "-c requirements/lock.txt" in install, install
