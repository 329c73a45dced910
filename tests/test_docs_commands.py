"""Every `edgeswitch` subcommand and `--flag` written in README.md and docs/*.md exists in the
CLI's parsers (built by edgeswitch.cli.main), so a renamed or removed flag cannot linger in the
docs.

Read from the markdown's code: fenced blocks (a `\\` continues a line) and inline code spans.
- `edgeswitch SUB [SUB2] ... --flag` (or `python -m edgeswitch ...`): SUB must be a
  subcommand (SUB2 one of its own, for `tokens`), and each flag up to the end of the command
  (`|`, `&&`, `;`, `#`, or a closing quote) one of that parser's visible options;
- an inline span that starts with a subcommand's name (`watch --vlm-deadline-ms`): the same;
- an inline span of flags alone (`--max-batch 1`): each flag must be an option of some
  subcommand, or of a benchmark script (benchmarks/*.py), or of the few other programs the
  docs show (pip, vllm, ray).
Hidden options (argparse.SUPPRESS: old names that only say the new one) do not count.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from edgeswitch.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# flags of other programs that the docs show in inline code beside ours
OTHER_PROGRAMS = {"--no-deps", "--limit-mm-per-prompt", "--max-model-len", "--head",
                  "--address", "--port"}
COMMAND_END = re.compile(r"\s(?:\||&&|;|#)\s|[`'\"]|$")


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(p: argparse.ArgumentParser) -> set[str]:
    return {o for a in p._actions if a.help != argparse.SUPPRESS for o in a.option_strings}


def _benchmark_flags() -> set[str]:
    flags = set()
    for path in (ROOT / "benchmarks").glob("*.py"):
        flags |= set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", path.read_text()))
    return flags


def _flags(text: str) -> list[str]:
    """The --flags of a command line: `--a/--b` is two, `--x=1` is `--x`."""
    out = []
    for token in re.findall(r"(?<![\w-])--[a-z][a-z0-9*-]*(?:/--[a-z][a-z0-9*-]*)*", text):
        out += token.split("/")
    return out


def _known(flag: str, options: set[str]) -> bool:
    if flag.endswith("*"):  # `--breaker-*`: some option starts so
        return any(o.startswith(flag[:-1]) for o in options)
    return flag in options


def _code(text: str) -> tuple[list[str], list[str]]:
    """(lines of fenced code, continuations joined; inline code spans outside fences)."""
    lines, spans = [], []
    parts = re.split(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    for i, part in enumerate(parts):
        if i % 2:  # a fenced block
            lines += re.sub(r"\s*\\\n\s*", " ", part).splitlines()
        else:
            # a span may wrap onto the next line (not across a paragraph)
            spans += [" ".join(m.split()) for m in re.findall(r"`([^`]+)`", part)
                      if "\n\n" not in m]
    return lines, spans


def _problems(path: Path) -> list[str]:
    parser = build_parser()
    commands = _subparsers(parser)
    everywhere = set().union(*(_options(p) for p in commands.values()))
    benchmarks = _benchmark_flags()
    lines, spans = _code(path.read_text())
    problems = []

    def check_command(rest: str, where: str) -> None:
        words = rest.split()
        if not words or words[0].startswith("-"):
            return
        name = words[0]
        if name not in commands:
            problems.append(f"{where}: no subcommand {name!r}")
            return
        p = commands[name]
        nested = _subparsers(p)
        if nested and len(words) > 1 and words[1] in nested:
            p = nested[words[1]]
        options = _options(p) | _options(parser)  # --help, --debug
        for flag in _flags(COMMAND_END.split(rest, maxsplit=1)[0]):
            if not _known(flag, options):
                problems.append(f"{where}: `edgeswitch {name}` has no {flag}")

    for text, kind in [(line, "code block") for line in lines] + \
            [(span, "inline code") for span in spans]:
        where = f"{path.name} {kind} {text.strip()[:60]!r}"
        found = False
        for m in re.finditer(r"(?:^|[\s(])(?:python -m )?edgeswitch (?=[a-z-])", text):
            found = True
            check_command(text[m.end():], where)
        if found or kind != "inline code":
            continue
        first = text.split()[0] if text.split() else ""
        if first in commands:
            check_command(text, where)
        elif first.startswith("--"):
            for flag in _flags(text):
                if not (_known(flag, everywhere) or flag in benchmarks
                        or flag in OTHER_PROGRAMS):
                    problems.append(f"{where}: no subcommand has {flag}")
    return problems


def test_the_docs_name_commands_and_flags():
    """The checker itself: it reads commands in blocks and spans, and catches a bad one."""
    assert _flags("edgeswitch watch v.mp4 --summary s.json --ssl-certfile/--ssl-keyfile") == \
        ["--summary", "--ssl-certfile", "--ssl-keyfile"]
    lines, spans = _code("x `edgeswitch demo --seed 1`\n```bash\nedgeswitch watch a \\\n"
                         "  --out b\n```\n")
    assert lines == ["edgeswitch watch a --out b"] and spans == ["edgeswitch demo --seed 1"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_command_and_flag_in_the_docs_exists(path, tmp_path):
    assert _problems(path) == []


def test_a_stale_flag_is_caught(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("Run `edgeswitch watch v.mp4 --deadline-ms 5`, `serve-cloud --engine ray`,\n"
                    "```bash\nedgeswitch distll --data x\n```\nand `--no-such-flag`.\n")
    problems = _problems(page)
    assert len(problems) == 4, problems
    assert any("--deadline-ms" in p for p in problems)
    assert any("--engine" in p for p in problems)
    assert any("'distll'" in p for p in problems)
    assert any("--no-such-flag" in p for p in problems)


def test_the_readme_is_short_and_the_docs_speak_of_the_project_only():
    """README.md at most 200 lines; no page names an issue, a branch or a path of one machine."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
    stale = re.compile(r"\bissues? #?\d+|#\d{1,4}\b|\bthis branch\b|\bmain's (script|loop)\b|"
                       r"(?<![\w.])/(?:work|tmp|root|home)/", re.I)
    for path in DOCS:
        found = stale.findall(path.read_text())
        assert not found, (path.name, found)
