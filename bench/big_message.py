"""Big message: peak RSS of `pop3bridge once` fetching, parsing and delivering one 50 MB message.

    python bench/big_message.py [--size-mb 50] [--rounds 3] [--quick]

One message with one base64 attachment (`bridge.testing.samples.big_message`) sits in a
private Dovecot. Each round runs `pop3bridge once` as a subprocess in two configurations:
`inline` (the webhook's `attachment_inline_limit` above the attachment, so the payload carries
it as base64: the worst case) and `metadata` (the default 1 MB limit: the attachment is
described, not carried). The peak is the kernel's high-water mark (VmHWM in
/proc/PID/status), read every 10 ms until the process exits, so it is the true peak up to the
last read; the interpreter's baseline (RSS of `pop3bridge once` on an empty mailbox) is given
too. The delivered webhook is verified by signature and its attachment checked by SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import (
    fill_mailbox,
    machine,
    poller_config,
    print_table,
    private_dovecot,
    write_results,
)

from bridge.testing.samples import big_message
from tests.support.dovecot import DovecotServer, DovecotUser
from tests.support.receiver import ThreadedReceiver

VENV_BIN = Path(sys.executable).parent


def _hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def run_once(
    server: DovecotServer, user: DovecotUser, rx: ThreadedReceiver, work: Path, inline: int
) -> tuple[float, int, Any]:
    """(seconds, peak RSS in bytes, the delivered request) for one `pop3bridge once`."""
    run = Path(tempfile.mkdtemp(dir=work))
    path = poller_config(
        run / "c.yaml",
        run / "state.db",
        rx,
        [{**server.plain_account(user, "big"), "max_message_size": "200MB"}],
        webhook={"attachment_inline_limit": inline, "timeout": 120},
    )
    before = len(rx.requests)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(VENV_BIN / "pop3bridge"), "once", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _hwm_kb(proc.pid) or 0)
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    got = rx.requests[before:]
    if proc.returncode != 0 or rx.invalid:
        raise SystemExit(f"pop3bridge once failed (exit {proc.returncode}): {err[-2000:]}")
    shutil.rmtree(run)
    return elapsed, peak * 1024, got[-1] if got else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 MB, 1 round")
    ap.add_argument(
        "--stages", action="store_true", help="tracemalloc peak of each poller stage, in-process"
    )
    args = ap.parse_args()
    if args.stages:
        return stages(int(args.size_mb * 1_000_000))
    if args.quick:
        args.size_mb, args.rounds = 5, 1
    size = int(args.size_mb * 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="pop3bridge-bench-big-"))
    before = machine()
    raw = big_message(size, seed=3)
    attachment_sha = _attachment_sha(raw)
    rows: dict[str, list[tuple[float, int]]] = {"baseline (empty mailbox)": []}
    with private_dovecot() as server, ThreadedReceiver(default_status=200) as rx:
        empty = server.add_user()
        user = fill_mailbox(server, [raw])
        del raw
        for r in range(args.rounds):
            secs, peak, _ = run_once(server, empty, rx, work, 1024 * 1024)
            rows["baseline (empty mailbox)"].append((secs, peak))
            for label, limit in (("inline", 256 * 1024 * 1024), ("metadata", 1024 * 1024)):
                secs, peak, req = run_once(server, user, rx, work, limit)
                _check(req, label, attachment_sha)
                rows.setdefault(label, []).append((secs, peak))
                print(
                    f"  round {r + 1}/{args.rounds} {label:9s} peak {peak / 1e6:7.1f} MB"
                    f" in {secs:.2f} s"
                )
    shutil.rmtree(work, ignore_errors=True)
    after = machine()
    results: dict[str, Any] = {}
    for label, samples in rows.items():
        peaks = sorted(p for _, p in samples)
        med = peaks[len(peaks) // 2]
        results[label] = {
            "median_peak_rss": med,
            "min_peak_rss": peaks[0],
            "max_peak_rss": peaks[-1],
            "ratio_to_message": med / size,
            "median_seconds": sorted(s for s, _ in samples)[len(samples) // 2],
        }
    base = results["baseline (empty mailbox)"]["median_peak_rss"]
    for r in results.values():
        r["ratio_above_baseline"] = (r["median_peak_rss"] - base) / size
    data = {
        "benchmark": "big_message",
        "message_bytes": size,
        "machine_before": before,
        "machine_after": after,
        "results": results,
        "target": {
            "goal": 4.0,
            "ratio": results["inline"]["ratio_to_message"],
            "met": results["inline"]["ratio_to_message"] <= 4.0,
        },
    }
    path = write_results("big_message" + ("_quick" if args.quick else ""), data)
    print_table(
        f"Big message ({size / 1e6:.0f} MB, one base64 attachment): peak RSS of pop3bridge once",
        ["run", "peak RSS MB", "x message", "x above baseline", "seconds"],
        [
            [
                k,
                v["median_peak_rss"] / 1e6,
                f"{v['ratio_to_message']:.2f}",
                f"{v['ratio_above_baseline']:.2f}",
                v["median_seconds"],
            ]
            for k, v in results.items()
        ],
    )
    t = data["target"]
    print(
        f"\ntarget: peak <= 4x message (inline): {t['ratio']:.2f}x -> "
        f"{'met' if t['met'] else 'NOT met'}"
    )
    print(
        f"machine: {before['nproc']} x {before['cpu']}; load {before['loadavg']} -> "
        f"{after['loadavg']}\nresults: {path}"
    )
    return 0


def stages(size: int) -> int:
    """Where the memory goes: Python-heap peak of each step `account_outbox_row` takes, one at a
    time, with the raw message (1x) already held. tracemalloc sees Python allocations only
    (not orjson's own buffer growth), so these are lower bounds."""
    import datetime as dt
    import tracemalloc

    from bridge import mail

    raw = big_message(size, seed=3)
    tracemalloc.start()
    rows = []

    def stage(name: str, fn: Any) -> Any:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        cur, peak = tracemalloc.get_traced_memory()
        rows.append([name, (peak - base) / 1e6, (peak - base) / size, (cur - base) / 1e6])
        return out

    for label, limit in (("inline", 256 << 20), ("metadata", 1 << 20)):
        data, _ = stage(
            f"{label}: parse + payload data",
            lambda limit=limit: mail.build_message_data_and_fingerprint(
                raw, attachment_inline_limit=limit, include_raw=False
            ),
        )
        body = mail.envelope(
            data, msg_id="m", account="a", uidl="u", size=size, timestamp=dt.datetime.now(dt.UTC)
        )
        stage(f"{label}: JSON encode", lambda body=body: mail.encode(body))
        del data, body
    tracemalloc.stop()
    print_table(
        f"Python-heap peak per stage, {size / 1e6:.0f} MB message (raw bytes already held)",
        ["stage", "peak MB", "x message", "kept MB"],
        rows,
    )
    return 0


def _attachment_sha(raw: bytes) -> str:
    from bridge.mail import build_message_data

    data = build_message_data(raw, attachment_inline_limit=0, include_raw=False)
    return str(data["attachments"][0]["sha256"])


def _check(req: Any, label: str, sha: str) -> None:
    if req is None or not req.verified:
        raise SystemExit(f"{label}: no verified webhook arrived")
    att = req.json["data"]["attachments"]
    if len(att) != 1 or att[0]["sha256"] != sha:
        raise SystemExit(f"{label}: attachment missing or wrong: {att[:1]!r:.200}")
    if label == "inline":
        import base64

        if hashlib.sha256(base64.b64decode(att[0]["content"])).hexdigest() != sha:
            raise SystemExit("inline: attachment content does not match its sha256")
    elif att[0].get("content") is not None:
        raise SystemExit("metadata: attachment content was inlined above the limit")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
