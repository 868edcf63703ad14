"""`PollerRuntime.accounts`: the spec of an unchanged account is reused, a changed one rebuilt."""

from __future__ import annotations

from pathlib import Path

from bridge.config import load_settings
from bridge.poller.resources import PollerRuntime

SECRET = "whsec_" + "A" * 32


def _account(name: str, password: str) -> dict[str, object]:
    return {
        "host": "127.0.0.1",
        "port": 9,
        "tls": "none",
        "allow_plaintext": True,
        "username": name,
        "password": password,
        "webhook": "main",
        "name": name,
    }


async def test_specs_are_rebuilt_only_when_their_account_changed(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"""
state: {{url: "sqlite:///{tmp_path / "s.db"}"}}
webhooks:
  - {{name: main, url: "http://127.0.0.1:9/a", secret: "{SECRET}"}}
accounts:
  - {{name: file, host: 127.0.0.1, port: 9, tls: none, allow_plaintext: true,
      username: f, password: file-password, webhook: main}}
poller: {{accounts_from_db: true}}
"""
    )
    async with PollerRuntime(load_settings(str(cfg), env={}), with_sender=False) as rt:
        await rt.store.add_account("db1", _account("db1", "first-password"), 0.0)
        await rt.store.add_account("db2", _account("db2", "other-password"), 0.0)
        first = {s.name: s for s in await rt.accounts()}
        assert set(first) == {"file", "db1", "db2"}
        assert first["db1"].password == "first-password"

        await rt.store.add_account("db1", _account("db1", "second-password"), 1.0)
        await rt.store.remove_account("db2")
        second = {s.name: s for s in await rt.accounts()}
        assert set(second) == {"file", "db1"}
        assert second["file"] is first["file"]  # same model: same spec, nothing rebuilt
        assert second["db1"] is not first["db1"]
        assert second["db1"].password == "second-password"

        third = {s.name: s for s in await rt.accounts()}
        assert third["db1"] is second["db1"]  # an equal row: the cached spec
        await rt.store.add_account("db2", _account("db2", "other-password"), 2.0)
        assert (await rt.accounts())[-1].name == "db2"  # removed and back: built again
