"""Markdown tables of the latest results (bench/results/*.json), for BENCHMARKS.md.

python bench/report.py > /tmp/tables.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _machine(data: dict[str, Any]) -> str:
    b, a = data["machine_before"], data["machine_after"]
    return (
        f"{b['nproc']} x {b['cpu']}, Python {b['python']}, {b['time_utc']}; load average "
        f"(1/5/15 min) before {'/'.join(f'{x:.2f}' for x in b['loadavg'])}, after "
        f"{'/'.join(f'{x:.2f}' for x in a['loadavg'])}"
    )


def poller(d: dict[str, Any]) -> str:
    res = d["results"]
    raw = res.get("raw pipelined loop", {}).get("median_rate")
    out = [
        f"{d['messages']} messages, {d['mailbox_bytes'] / 1e6:.1f} MB; {_machine(d)}",
        "",
        "| contender | msg/s (median) | min - max | spread | x raw loop | CPU ms per msg |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in res.items():
        ratio = f"{r['median_rate'] / raw:.2f}" if raw else "-"
        cpu = r.get("median_cpu_ms_per_item")
        out.append(
            f"| {name} | {r['median_rate']:,.0f} | {r['min_rate']:,.0f} - {r['max_rate']:,.0f} "
            f"| {r['spread_pct']:.0f} % | {ratio} | {'-' if cpu is None else f'{cpu:.3f}'} |"
        )
    out += ["", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    for t in d.get("targets", []):
        # A ceiling (CPU ms per message) is a measured value, not a ratio.
        measured, goal = (
            (f"{t['ratio']:.2f} ms", f"<= {t['goal']} ms")
            if t.get("at_most")
            else (f"{t['ratio']:.2f}x", f">= {t['goal']}x")
        )
        out.append(f"| {t['target']} | {measured} | {goal} | {'yes' if t['met'] else '**no**'} |")
    for failure in d.get("getmail_failures", []):
        out.append(f"\ngetmail6 run failed and was repeated: {failure}")
    return "\n".join(out)


def big(d: dict[str, Any]) -> str:
    out = [
        f"one message of {d['message_bytes'] / 1e6:.0f} MB; {_machine(d)}",
        "",
        "| run | peak RSS (median) | x message size | x message above baseline | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in d["results"].items():
        out.append(
            f"| {name} | {r['median_peak_rss'] / 1e6:.0f} MB | {r['ratio_to_message']:.2f} | "
            f"{r['ratio_above_baseline']:.2f} | {r['median_seconds']:.1f} |"
        )
    return "\n".join(out)


def many(d: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{d['accounts']} accounts with {d['messages']} messages, then {d['idle_accounts']} "
            f"idle at {d['interval']:g} s; Dovecot {d['dovecot']}; {_machine(d)}",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| first full cycle (exec to every message delivered), "
            f"{d.get('first_cycle_receiver', 'Python')} receiver | "
            f"{d['first_cycle_seconds']:.2f} s |",
            f"| CPU used by the bridge in that cycle | {d['first_cycle_cpu_seconds']:.2f} s |",
            *(
                f"| first full cycle, Python receiver (bridge CPU) | "
                f"{py['median_seconds']:.2f} s ({py['median_cpu_seconds']:.2f} s) |"
                for py in [d.get("first_cycle", {}).get("this/python")]
                if py and d.get("first_cycle_receiver") != "python"
            ),
            f"| idle polling, {d['idle_accounts']} accounts, over "
            f"{d['idle_window_seconds']:.0f} s | {100 * d['idle_core_share']:.2f} % of one core "
            f"({d['idle_polls_in_window']} polls, {d['idle_cpu_ms_per_poll']:.3f} ms each) |",
            f"| RSS while idle | {d['idle_rss_max'] / 1e6:.0f} MB |",
            f"| RSS per added idle account | {d['rss_per_added_account'] / 1e3:.1f} kB |",
        ]
    )


def proxy(d: dict[str, Any]) -> str:
    pipe, seq, conc, bigr = d["pipelined"], d["sequential"], d["concurrent"], d["big_retr"]
    out = [
        f"{d['messages']} messages pipelined, {d['sequential_messages']} with poplib, "
        f"{d['sessions']} sessions x {d['commands_per_session']} commands; {_machine(d)}",
        "",
        "| target | pipelined msg/s | x direct | poplib msg/s | x direct | "
        f"{d['sessions']} sessions cmd/s | p50 ms | p99 ms | added p50 | added p99 | "
        "RSS after | RSS growth, 50 MB RETR |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in pipe:
        c = conc[name]
        growth = bigr.get(name, {}).get("rss_growth_bytes")
        out.append(
            f"| {name} | {pipe[name]['median_rate']:,.0f} | "
            f"{pipe[name]['median_rate'] / pipe['direct']['median_rate']:.2f} | "
            f"{seq[name]['median_rate']:,.1f} | "
            f"{seq[name]['median_rate'] / seq['direct']['median_rate']:.2f} | "
            f"{c['median_rate']:,.0f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | "
            f"{c['added_p50_ms']:+.2f} | {c['added_p99_ms']:+.2f} | "
            f"{(c['rss_after'] / 1e6):.0f} MB | "
            + (f"{growth / 1e6:.1f} MB |" if growth is not None else "- |")
        )
    out.append(f"\npop3bridge proxy: {d['pop3bridge_proxy']}")
    return "\n".join(out)


def main() -> int:
    for title, name, fn in (
        ("Poller throughput", "poller_throughput", poller),
        ("Big message", "big_message", big),
        ("Many accounts", "many_accounts", many),
        ("Proxy", "proxy", proxy),
    ):
        data = _load(name)
        print(f"### {title}\n")
        print(fn(data) if data else "(no results yet)")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
