"""`--config` before or after any (sub)subcommand, in every `--help`; `--version`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bridge import __version__
from bridge.cli import EVENT_LOOP_ENV, SUBCOMMANDS, build_parser, main


def _every_command_path() -> list[list[str]]:
    """Every command and sub-action the CLI has, found by walking the real parsers."""
    paths: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        paths.append(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, [*path, name])

    for name in SUBCOMMANDS:
        sub = build_parser([name])._subparsers._group_actions[0]  # type: ignore[union-attr]
        walk(sub.choices[name], [name])
    return paths


PATHS = _every_command_path()


def test_the_walk_finds_nested_actions() -> None:
    assert ["dlq", "list"] in PATHS and ["accounts", "add"] in PATHS
    assert ["config", "reference"] in PATHS and ["probe"] in PATHS


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_every_help_shows_config(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    assert "--config FILE" in capsys.readouterr().out


def test_top_level_help_shows_config_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--config FILE" in out and "--version" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pop3bridge {__version__}"


def _config(tmp_path: Path) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(f"state: {{url: 'sqlite:///{tmp_path / 'state.db'}'}}\n")
    return str(path)


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "list", "--config", "{c}"],
        ["dlq", "--config", "{c}", "list"],
        ["--config", "{c}", "dlq", "list"],
        ["dlq", "replay", "--all", "--config", "{c}"],
        ["accounts", "list", "--config", "{c}"],
        ["--config", "{c}", "accounts", "list"],
        ["config", "check", "--config", "{c}"],
        ["--config", "{c}", "config", "check"],
        ["config", "--config", "{c}", "check"],
    ],
    ids=" ".join,
)
def test_config_works_before_and_after_the_subcommand(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("POP3BRIDGE_CONFIG", raising=False)
    config = _config(tmp_path)
    assert main([a.format(c=config) for a in argv]) == 0
    # The file was read: its state is the one used (the store made) or reported (check).
    used = (tmp_path / "state.db").exists() or str(tmp_path / "state.db") in capsys.readouterr().out
    assert used


def test_explicit_config_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POP3BRIDGE_CONFIG", str(tmp_path / "missing.yaml"))
    assert main(["config", "check", "--config", _config(tmp_path)]) == 0
    assert main(["config", "check"]) == 2  # the environment's file is read when no option
    assert "missing.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["run"], ["once"], ["dlq", "list"], ["accounts", "list"], ["config", "check"]]
)
def test_no_configuration_at_all_says_so_and_how_to_give_one(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("POP3BRIDGE_"):
            monkeypatch.delenv(name)
    # `run` would install uvloop's policy for the rest of this test process otherwise.
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert main(argv) == 2
    err = capsys.readouterr().err
    # Not "cannot write /var/lib/pop3bridge/state.db": the defaults were never the point.
    assert "no configuration given" in err and "--config FILE" in err
    assert "POP3BRIDGE_CONFIG" in err and "state.db" not in err


def test_configuration_from_the_environment_alone_is_still_a_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POP3BRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("POP3BRIDGE_STATE__URL", f"sqlite:///{tmp_path / 'state.db'}")
    assert main(["config", "check"]) == 0
    assert str(tmp_path / "state.db") in capsys.readouterr().out
