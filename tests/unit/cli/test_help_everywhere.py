"""`--help` on every command and subcommand of `herald`, found by walking the parser:
a command added later cannot ship without help text or with a broken parser."""

from __future__ import annotations

import argparse

import pytest

from services.cli.main import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                assert helps.get(name), f"herald {' '.join((*path, name))} has no help line"
                found += _commands(child, (*path, name))
    return found


COMMANDS = _commands(build_parser())


def test_the_walk_finds_every_group():
    groups = {path[0] for path in COMMANDS if path}
    assert groups == {
        "apps",
        "keys",
        "credentials",
        "devices",
        "users",
        "send",
        "campaigns",
        "notifications",
        "trace",
        "demo",
    }
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "herald")
def test_help_exits_0_with_usage_and_the_global_options(path, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])

    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith(f"usage: {' '.join(('herald', *path))}")
    assert "--json" in out
    assert "--api-key" in out
