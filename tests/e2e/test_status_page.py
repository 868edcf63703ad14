"""The status page of a real `pop3bridge run` in a real headless Chromium (Debian's, driven by
Playwright): it loads without console errors, shows the overall state, a row per account with its
state and chart, the exact `dlq replay` command, and no secret; a screenshot is kept in tmp."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bridge.testing.samples import generate_messages
from tests.e2e.harness import Receiver, dovecot_account
from tests.e2e.test_ops import Bridge, run_config
from tests.support import require_service
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What the probe of this machine kind found necessary for a closed network (no background
# fetches, no sandbox as root).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_status_page_in_a_real_browser(
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    receiver: Receiver,
    bridges: list[Bridge],
) -> None:
    require_service("chromium", Path(CHROMIUM).exists(), "apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")

    dovecot.deliver_many(dovecot_user, generate_messages(4, seed=1605))
    good = dovecot_account(dovecot, dovecot_user)
    locked = dovecot.add_user()
    wrong = "wrong-password-5521"
    bad = dovecot_account(dovecot, locked, name="locked-out", password=wrong)
    cfg = tmp_path / "c.yaml"
    port = run_config(cfg, f"sqlite:///{tmp_path / 's.db'}", receiver, [good, bad])
    receiver.fail_next(1, status=400)  # one dead letter
    bridge = Bridge(cfg, port)
    bridges.append(bridge)
    name = good["name"]
    bridge.wait("3 deliveries", lambda: len(receiver.delivered) == 3)
    bridge.wait(
        "the bad account failing",
        lambda: bridge.status()["accounts"].get("locked-out", {}).get("state") == "failing",
        timeout=60,
    )
    status = bridge.status()
    assert status["state"] == "degraded"
    dead_ids = status["accounts"][name]["dead_letter_ids"]
    assert len(dead_ids) == 1

    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            response = page.goto(bridge.base + "/", wait_until="load")
            assert response is not None and response.status == 200
            shot = Path(os.environ.get("POP3BRIDGE_SCREENSHOT_DIR", tmp_path)) / "status-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5000
            assert page.inner_text("#overall").strip().lower() == "degraded"
            rows = page.locator("tr.account")
            assert rows.count() == 2
            text = page.inner_text("body")
            good_row = rows.filter(has_text=name)
            # One dead letter makes the good account "degraded", with the reason beside it.
            assert "degraded" in good_row.inner_text().lower()
            assert "1 dead letter(s) wait for replay" in good_row.inner_text()
            assert good_row.locator("svg.chart rect[height]").count() >= 2  # background + bars
            assert f"pop3bridge dlq replay {dead_ids[0]}" in text
            bad_row = rows.filter(has_text="locked-out")
            assert "failing" in bad_row.inner_text().lower()
            assert "3 in the last hour" in good_row.inner_text()
            refresh = page.locator('meta[http-equiv="refresh"]').get_attribute("content")
            assert refresh is not None and int(refresh) > 0
            html = page.content()
        finally:
            browser.close()
    assert errors == []
    for secret in (wrong, dovecot_user.password, receiver.secret):
        assert secret not in html
    assert "<script" not in html and "http://" not in html.replace(bridge.base, "")
