"""What one delivery log line costs, next to what one message costs the poller.

    .venv/bin/python bench/log_cost.py [--lines 20000] [--rounds 3]

Times, in CPU microseconds per call (`time.process_time`, alternated rounds, median), the line
the delivery worker would write per message at INFO in JSON and in text format (the same
fields: account, uidl, webhook-id, webhook, status, attempt, ms), and the DEBUG line it writes
per attempt while DEBUG is off (what the per-message trail costs as it ships). Output goes to
/dev/null, so only formatting and redaction are measured. The ratio to a whole message's CPU
(`--message-ms`, default 0.72 ms: `pop3bridge once` end to end in BENCHMARKS.md) is why
bridge/delivery/summary.py logs deliveries as a summary per interval and each attempt at DEBUG.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

from bridge.ops.logging import configure_logging

EXTRA = {
    "account": "support",
    "uidl": "000000017f3a9c21",
    "msg_id": "msg_63b2d15318feccd5c69e6e7d424fdc37",
    "webhook": "main",
    "status": 204,
    "attempt": 1,
    "ms": 3.2,
}


def per_call_us(fmt: str, debug_call: bool, lines: int) -> float:
    """CPU per call of the INFO delivery line, or of the DEBUG attempt line at level INFO."""
    configure_logging(fmt, "INFO")
    log = logging.getLogger("bridge.delivery.worker")
    start = time.process_time()
    if debug_call:
        for _ in range(lines):
            log.debug("delivery attempt: %s", "delivered", extra=EXTRA)
    else:
        for _ in range(lines):
            log.info("delivered", extra=EXTRA)
    return (time.process_time() - start) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--message-ms", type=float, default=0.72)
    args = parser.parse_args()
    out = sys.stdout
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the log handler's stream, kept open
    cases = {
        "json INFO": ("json", False),
        "text INFO": ("text", False),
        "DEBUG off": ("json", True),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (fmt, debug_call) in cases.items():
            samples[name].append(per_call_us(fmt, debug_call, args.lines))
    for name, values in samples.items():
        us = statistics.median(values)
        share = us / (args.message_ms * 1000) * 100
        out.write(
            f"{name:10s} {us:8.1f} us/line  = {share:5.1f} % of a {args.message_ms} ms message\n"
        )


if __name__ == "__main__":
    main()
