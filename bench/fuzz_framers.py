"""A long fuzz of the POP3 framers' bounds: the suite's properties, for as long as you give them.

    python bench/fuzz_framers.py                 # 10 minutes
    python bench/fuzz_framers.py --minutes 120 --seed 7

Runs the properties of tests/pop3/framer_props.py (stray LFs, status-line, command-line and
SASL-answer limits, typed errors only, span mode against event mode, over inputs built to reach
each bound) in rounds of `--round` examples each, round-robin, until the time is up, and prints
how many inputs each tried. tests/pop3/test_framer_bounds.py and test_span_mode.py run the same
properties in CI with a small fixed budget; this script is not part of CI. A failure prints
hypothesis' shrunk example and exits 1. bench/fuzz_atheris.py is the coverage-guided sibling
(needs atheris).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.pop3.wire import DEFAULT_MAX_STATUS_LINE, MAX_STRAY_LF  # noqa: E402
from tests.pop3 import framer_props as props  # noqa: E402

Property = tuple[str, tuple[st.SearchStrategy[Any], ...], Callable[..., None]]

PROPERTIES: list[Property] = [
    (
        "stray LF bound",
        (st.integers(0, 40 * MAX_STRAY_LF), props.cuts),
        props.check_stray_lf_bound,
    ),
    (
        "status-line bound",
        (
            st.sampled_from(props.BOUND_COUNTS) | st.integers(6, 4 * DEFAULT_MAX_STATUS_LINE),
            props.cuts,
        ),
        props.check_status_line_bound,
    ),
    (
        "command-line bound",
        (
            st.integers(7, 2000),
            props.cuts,
            st.just(False),
        ),
        props.check_command_line_bound,
    ),
    (
        "SASL answer bound",
        (st.sampled_from(props.BOUND_COUNTS) | st.integers(3, 140_000), props.cuts, st.just(True)),
        props.check_command_line_bound,
    ),
    (
        "framer: typed errors only",
        (props.bounded_bytes, props.kinds, props.cuts),
        props.check_framer_only_raises_typed_errors,
    ),
    (
        "reader: typed errors only",
        (props.bounded_bytes, props.cuts, st.sampled_from([8, 255, 64 * 1024])),
        props.check_reader_only_raises_typed_errors,
    ),
    (
        "framer: span mode = event mode",
        (
            props.span_wire(),
            props.span_kinds,
            props.span_cuts,
            st.sampled_from(["crlf", "auto", "lf"]),
            st.booleans(),
            st.sampled_from([0, 7, 600, 1 << 20]) | st.integers(0, 20_000),
        ),
        props.check_span_mode_equals_event_mode,
    ),
]


def run_round(
    name: str,
    strategies: tuple[Any, ...],
    check: Callable[..., None],
    n: int,
    round_seed: int,
    counts: Counter[str],
) -> None:
    def body(args: tuple[Any, ...]) -> None:
        counts[name] += 1
        check(*args)

    test = seed(round_seed)(
        settings(
            max_examples=n,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(given(st.tuples(*strategies))(body))
    )
    test()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--round", type=int, default=500, help="examples per property per round")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    deadline = time.monotonic() + args.minutes * 60
    counts: Counter[str] = Counter()
    rounds = 0
    print(f"seed {args.seed}; {len(PROPERTIES)} properties; {args.minutes} min", flush=True)
    while time.monotonic() < deadline:
        for name, strategies, check in PROPERTIES:
            try:
                run_round(name, strategies, check, args.round, args.seed + rounds, counts)
            except Exception as exc:  # hypothesis has printed the falsifying example
                print(f"FAILED {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            if time.monotonic() >= deadline:
                break
        rounds += 1
        print(f"round {rounds}: {sum(counts.values())} inputs", flush=True)
    for name, n in sorted(counts.items()):
        print(f"{n:10d}  {name}")
    print(f"{sum(counts.values()):10d}  total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
