"""Bar chart of messages/s per contender from bench/results/poller_throughput.json (and the
proxy results when present) into bench/results/throughput.png.

    python bench/plot.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    suffix = "_quick" if args.quick else ""
    poller = json.loads((RESULTS / f"poller_throughput{suffix}.json").read_text())
    proxy_path = RESULTS / f"proxy{suffix}.json"
    proxy = json.loads(proxy_path.read_text()) if proxy_path.exists() else None

    panels = 2 if proxy else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.8), squeeze=False)
    _bars(
        axes[0][0],
        poller["results"],
        f"Poller: {poller['messages']} messages of ~5 KB from Dovecot",
        lambda name: "tab:blue" if name.startswith("pop3bridge") else "tab:gray",
    )
    if proxy:
        rows = {f"{k} (pipelined)": v for k, v in proxy["pipelined"].items()}
        rows |= {f"{k} (poplib)": v for k, v in proxy["sequential"].items()}
        _bars(
            axes[0][1],
            rows,
            "Proxy: RETR through each, pipelined vs one at a time",
            lambda name: "tab:blue" if name.startswith("pop3bridge") else "tab:gray",
        )
    load = poller["machine_before"]["loadavg"][0]
    fig.suptitle(
        f"messages/s, median of {next(iter(poller['results'].values()))['rounds']} alternating "
        f"rounds (whiskers: min-max); {poller['machine_before']['nproc']} cores, "
        f"load {load:.1f} at start",
        fontsize=9,
    )
    fig.tight_layout()
    out = RESULTS / f"throughput{suffix}.png"
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")
    return 0


def _bars(ax, results, title, colour) -> None:  # type: ignore[no-untyped-def]
    names = list(results)
    med = [results[n]["median_rate"] for n in names]
    low = [m - results[n]["min_rate"] for n, m in zip(names, med, strict=True)]
    high = [results[n]["max_rate"] - m for n, m in zip(names, med, strict=True)]
    y = range(len(names))
    ax.barh(y, med, xerr=[low, high], color=[colour(n) for n in names], capsize=3)
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    # Log scale: getmail6 (~90/s) and the raw loop (~25,000/s) must both be readable.
    ax.set_xscale("log")
    ax.set_xlabel("messages/s (log scale)")
    ax.set_title(title, fontsize=9)
    for i, (m, h) in enumerate(zip(med, high, strict=True)):
        ax.text((m + h) * 1.08, i, f"{m:,.0f}", va="center", fontsize=8)
    ax.set_xlim(right=max(m + h for m, h in zip(med, high, strict=True)) * 3)


if __name__ == "__main__":
    sys.exit(main())
