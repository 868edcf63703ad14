"""Every subcommand starts with the one redacting log handler, whatever it does later."""

from __future__ import annotations

import argparse
import logging
import types

import pytest

from bridge import cli


@pytest.mark.parametrize("command", sorted(cli.SUBCOMMANDS))
def test_a_subcommand_that_never_configures_logging_still_redacts(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(args: argparse.Namespace) -> int:
        logging.getLogger("bridge.somewhere").warning("C: PASS hunter2-secret")
        return 0

    fake = types.SimpleNamespace(add_arguments=lambda parser: None, run=run)
    monkeypatch.setattr(cli, "_load", lambda name: fake)
    assert cli.main([command]) == 0
    err = capsys.readouterr().err
    assert "PASS ***" in err and "hunter2-secret" not in err
    assert "WARNING bridge.somewhere:" in err  # the text format, not Python's bare fallback


def test_the_default_handler_follows_sys_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from bridge.ops.logging import configure_logging

    configure_logging("json", "INFO")
    later = io.StringIO()
    monkeypatch.setattr("sys.stderr", later)
    logging.getLogger("bridge.x").info("after the swap")
    assert '"message":"after the swap"' in later.getvalue()
