"""`pop3bridge accounts add|list|remove` on both stores, and what running replicas make of it:
the same commands against SQLite and PostgreSQL (private schema), a clear-text password warned
about and never listed, references stored as references."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.cli import main
from tests.e2e.harness import new_secret
from tests.support.pgschema import BACKENDS, drop_schema, schema_url


@pytest.fixture(params=BACKENDS)
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
        return
    url = schema_url(request.getfixturevalue("postgres_dsn"), "t_acctcli")
    yield url
    asyncio.run(drop_schema(url))


def test_add_list_remove(
    state_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOX_PW", "resolved-at-load")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "state": {"url": state_url},
                "webhooks": [
                    {"name": "main", "url": "https://example.test/h", "secret": new_secret()}
                ],
                "accounts": [],
                "poller": {"accounts_from_db": True},
            }
        )
    )
    base = ["accounts", "--config", str(cfg)]
    secret = "Plain-Text-Pw-" + uuid.uuid4().hex
    assert main([*base, "add", "plain", "--url", "pop3s://u@mail.test", "--webhook", "main",
                 "--set", f"password={secret}"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert "stored in clear" in out.err and secret not in out.err + out.out
    assert main([*base, "add", "ref", "--url", "pop3s://v@mail.test", "--webhook", "main",
                 "--password-env", "BOX_PW"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert "stored in clear" not in out.err
    # An invalid account is refused before anything is stored.
    assert main([*base, "add", "bad", "--url", "pop3s://w@mail.test", "--webhook", "nope"]) == 2
    capsys.readouterr()

    assert main([*base, "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["name"] for a in listed] == ["plain", "ref"]
    assert listed[0]["password"] == "***"
    assert listed[1]["password_env"] == "BOX_PW"  # a reference is not a secret

    assert main([*base, "remove", "plain"]) == 0
    assert main([*base, "remove", "plain"]) == 1
    capsys.readouterr()
    assert main([*base, "list"]) == 0
    assert [json.loads(x)["name"] for x in capsys.readouterr().out.splitlines()] == ["ref"]
