"""CPU cost of parsing: the known quadratic header shapes, and the MIME fast path on ordinary mail.

Hostile shapes (docs/security.md, issue 19): each shape from
tests/security/test_parse_isolation.py is built at several sizes of its one hostile field and
handed to `bridge.mail.build_message_data`; the table gives CPU seconds. `--uncapped` switches
the cheap caps off (bridge/mail/_limits.py), which shows what the stdlib parser alone costs:
minutes at a few MB, so keep the sizes small with it.

    python bench/parse_cost.py --sizes 125,250
    python bench/parse_cost.py --uncapped --sizes 125,250,500,1000,2000

Ordinary mail (`--mix`, issue 17): the poller's whole per-message payload build
(`build_message_data_and_fingerprint`) and the MIME parse alone, with the fast path
(bridge/mail/_fastmime.py) and with it switched off so the stdlib feed parser runs, per shape
of `bridge.testing.samples.generate_messages` and on its rotating mix. Both variants run in the
same process, rounds alternating; figures are CPU microseconds per message (process_time),
medians over the rounds, and the ratio stdlib / fast.

    python bench/parse_cost.py --mix --messages 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge import mail
from bridge.mail import _fastmime, _mime
from bridge.testing.samples import generate_messages

# generate_messages rotates these kinds (index % 4).
KINDS = ("text/plain 7bit", "alternative (qp)", "mixed + base64 attachment", "text/plain 8bit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="125,250,500,1000,2000", help="KB, comma-separated")
    ap.add_argument("--uncapped", action="store_true", help="switch the cheap caps off")
    ap.add_argument("--max-seconds", type=float, default=12.0, help="stop a shape past this")
    ap.add_argument("--mix", action="store_true", help="ordinary mail: fast path vs stdlib")
    ap.add_argument("--messages", type=int, default=2000, help="with --mix: messages per round")
    ap.add_argument("--rounds", type=int, default=3, help="with --mix: alternated rounds")
    args = ap.parse_args()
    if args.mix:
        mix(args.messages, args.rounds)
    else:
        hostile(args)


def _per_message(work: Callable[[bytes], object], raws: list[bytes], fast: bool) -> float:
    """CPU microseconds per message of `work` over `raws`, with or without the fast path."""
    off = mock.patch.object(_fastmime, "parse", return_value=None)
    if not fast:
        off.start()
    try:
        started = time.process_time()
        for raw in raws:
            work(raw)
        return (time.process_time() - started) / len(raws) * 1e6
    finally:
        if not fast:
            off.stop()


def _build(raw: bytes) -> object:
    return mail.build_message_data_and_fingerprint(
        raw, attachment_inline_limit=1 << 20, include_raw=False
    )


def mix(n: int, rounds: int) -> None:
    raws = generate_messages(n)
    taken = sum(_fastmime.parse(raw, _mime._POLICY) is not None for raw in raws)
    sets = [(name, raws[i :: len(KINDS)]) for i, name in enumerate(KINDS)]
    sets.append(("bench mix (all four, rotating)", raws))
    works = [("payload", _build), ("parse only", _mime.parse)]
    results: dict[tuple[str, str, bool], list[float]] = {}
    for _ in range(rounds):
        for name, subset in sets:
            for what, work in works:
                _per_message(work, subset[:50], True)  # warm caches both ways
                for fast in (True, False):
                    us = _per_message(work, subset, fast)
                    results.setdefault((name, what, fast), []).append(us)
    print(f"{n} messages of generate_messages(), {taken} took the fast path; {rounds} rounds")
    print(f"{'shape':32}{'what':>12}{'fast us':>10}{'stdlib us':>11}{'ratio':>8}")
    for name, _ in sets:
        for what, _ in works:
            fast_us = statistics.median(results[(name, what, True)])
            slow_us = statistics.median(results[(name, what, False)])
            ratio = slow_us / fast_us
            print(f"{name:32}{what:>12}{fast_us:10.1f}{slow_us:11.1f}{ratio:7.2f}x", flush=True)


def hostile(args: argparse.Namespace) -> None:
    from tests.security.test_parse_isolation import SHAPES

    sizes = [int(s) for s in args.sizes.split(",")]
    caps = mock.patch("bridge.mail._payload.over_limits", return_value=None)
    if args.uncapped:
        caps.start()
    print(f"{'shape':34}" + "".join(f"{s:>9} KB" for s in sizes))
    for name, make in SHAPES.items():
        cells: list[str] = []
        for kb in sizes:
            raw = make(kb * 1000)
            started = time.process_time()
            mail.build_message_data(raw, attachment_inline_limit=1 << 20, include_raw=False)
            spent = time.process_time() - started
            cells.append(f"{spent:12.3f}")
            if spent > args.max_seconds:
                cells += [f"{'-':>12}"] * (len(sizes) - len(cells))
                break
        print(f"{name:34}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
