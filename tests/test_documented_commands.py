"""Every `python -m core TOOL ...` command the README, the model cards' header and the modules' docstrings
show parses with that module's own argument parser (the cards' command once did not: `--splits` took
the checkpoints as split names)."""
from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from core.__main__ import TOOLS

ROOT = Path(__file__).resolve().parent.parent


class _Parsed(Exception):
    pass


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every `python -m core TOOL` with arguments in README.md (its sh blocks, one command
    per line, and its inline code, which may wrap over a line break) and the docstrings of core/**/*.py."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "core").rglob("*.py"))]:
        text = path.read_text()
        if path.suffix == ".py":
            doc = re.match(r'(?:\s*#[^\n]*)*\s*"""(.*?)"""', text, re.S)
            snippets = doc.group(1).splitlines() if doc else []
        else:
            blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
            snippets = [line for b in blocks for line in b.splitlines()]
            snippets += re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for snippet in snippets:
            for part in re.split(r"&&|;", " ".join(snippet.split())):
                m = re.search(r"python -m core [a-z][a-z-]*(?=\s).*", part)
                if m is None:
                    continue
                command = re.split(r"\s(?:>|\||#)(?:\s|$)|`", m.group(0))[0].strip()
                if len(command.split()) > 4:  # a tool name alone in prose is not a command
                    found.append((path.relative_to(ROOT).as_posix(), command))
    return found


def parse_only(tool: str, argv: list[str], monkeypatch) -> None:
    """Run the tool's main(argv) up to its argument parsing: parse with its own parser, then stop."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(_Parsed):
        importlib.import_module(TOOLS[tool]).main(argv)


def test_the_extraction_finds_the_commands_of_the_readme_inline_code_and_the_docstrings():
    commands = documented_commands()
    tools = {c.split()[3] for _, c in commands}
    assert {"train", "evaluate", "cards", "recalibrate", "generalize"} <= tools
    cards = [c for w, c in commands if c.split()[3] == "cards"]
    # README's inline command spans a line break; the docstring's ends at its redirect
    assert any(w == "README.md" and "weights/seed-v21-128.pt" in c for w, c in commands if "core cards" in c)
    assert all(">" not in c for c in cards)


@pytest.mark.parametrize("where,command", documented_commands())
def test_documented_command_parses(where, command, monkeypatch):
    words = shlex.split(command.replace("[", "").replace("]", ""))
    try:
        parse_only(words[3], words[4:], monkeypatch)
    except SystemExit as e:
        pytest.fail(f"{where}: `{command}` does not parse (exit {e.code})")


def test_a_misordered_cards_command_is_caught(monkeypatch):
    with pytest.raises(SystemExit):
        parse_only("cards", ["--data", "data/sample", "--splits", "test", "ood", "weights/default.pt"],
                   monkeypatch)
