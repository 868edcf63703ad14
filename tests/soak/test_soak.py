"""The poller soak (tests/soak/run.py) for about a minute: SIGKILLs, receiver failures, POP3
cuts/stalls/IN-USE/SYS-TEMP through a fault relay, Dovecot restarts and a full disk, while mail
keeps arriving. Nothing may be lost or deleted before its 2xx. The long run is
``python -m tests.soak.run --minutes 3``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.run import MIN_KILLS, Mailbox, Sent, early_deletions, run_soak
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

CHAOS_SECONDS = 40


def test_soak_loses_nothing_and_deletes_nothing_early(
    tmp_path: Path, dovecot: DovecotServer, soak_reports: list[str]
) -> None:
    report = run_soak(dovecot, tmp_path, seconds=CHAOS_SECONDS, drain_timeout=35)
    text = report.render()
    soak_reports.append(text)
    print(text)
    log_tail = (tmp_path / "bridge.log").read_text(errors="replace")[-4000:]
    assert report.sent > 100, text
    assert report.kills >= MIN_KILLS, text
    assert report.lost == 0, f"{text}\n{log_tail}"
    assert report.deleted_before_delivery == 0, text
    assert report.duplicate_ids_consistent, text
    assert report.dead_lettered == 0, text  # max_attempts is far above what 40 s can use
    assert report.invalid_signatures == 0, text
    assert report.unexpected_exits == [], f"{text}\n{log_tail}"
    assert report.asyncio_errors == 0, text
    # The same guarantees, proven from the custody trails alone.
    assert report.trails_checked >= report.sent, text
    assert report.trail_dele_before_2xx == 0, text
    assert report.trail_removed_unproven == 0, text
    assert report.clean_exit, f"{text}\n{log_tail}"
    # Every fault kind was injected, and the relay's faults really hit sessions.
    assert all(report.faults[k] >= 1 for k in ("webhook down", "dovecot restart")), text
    assert sum(report.relay_fired.values()) >= 3, text


def test_early_deletion_check_flags_a_message_deleted_before_its_2xx(tmp_path: Path) -> None:
    """The soak's own detector must be able to fail: a file gone without a 2xx is flagged."""
    user = DovecotUser("u", "p", tmp_path)
    delete = Mailbox("d", user, delete=True, via_relay=False)
    keep = Mailbox("k", user, delete=False, via_relay=False)
    sent = [Sent("s1", delete, "f1"), Sent("s2", delete, "f2"), Sent("s3", keep, "f3")]
    present = {"d": {"f2"}, "k": set()}
    assert early_deletions(sent, present, {}) == ["s1"]
    assert early_deletions(sent, present, {"s1": {"msg_x"}}) == []
