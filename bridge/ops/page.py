"""The status page at `/`: what an operator leaves open on a second screen.

One self-contained HTML document per request: inline CSS, an inline SVG bar chart per account,
no JavaScript and nothing loaded from elsewhere (the page must work on a locked-down network and
can never leak a URL or token to a third party). It refreshes itself with a meta refresh. Every
string that came from a server, a receiver or a library is HTML-escaped and passed through the
log redactor, like a log line, before it is shown.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Sequence
from typing import Any

from bridge.ops.logging import redact

__all__ = ["REFRESH_SECONDS", "check_label", "render_page"]

REFRESH_SECONDS = 15

_STATE_CLASS = {
    "ok": "ok",
    "degraded": "warn",
    "canary stale": "warn",
    "failing": "bad",
    "needs re-authorisation": "bad",
}

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "h1{font-size:1.4em;margin:0 0 .3em}"
    ".badge{display:inline-block;padding:.1em .6em;border-radius:.3em;color:#fff;"
    "font-weight:600;text-transform:uppercase;font-size:.85em;vertical-align:middle}"
    ".ok{background:#2e7d32}.warn{background:#b26a00}.bad{background:#c62828}"
    ".muted{color:#666;font-size:.9em}"
    "table{border-collapse:collapse;margin-top:1em;width:100%}"
    "td,th{border-bottom:1px solid #ddd;padding:.45em .6em;text-align:left;vertical-align:top}"
    "th{font-size:.85em;color:#555;font-weight:600}"
    "code{background:#f3f3f3;padding:.1em .3em;border-radius:.2em;font-size:.85em}"
    ".err{color:#a00;max-width:28em;overflow-wrap:anywhere}"
    "svg{display:block}"
)


def check_label(name: str) -> str:
    """A readiness check's name for people: `Observer.store_reachable` -> `store reachable`."""
    return name.rsplit(".", 1)[-1].strip("_").replace("_", " ")


def _ago(value: object, now: float) -> str:
    if not isinstance(value, int | float) or value <= 0:
        return "never"
    seconds = max(0.0, now - value)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def _when(value: object) -> str:
    if isinstance(value, int | float) and value > 0:
        return _dt.datetime.fromtimestamp(value, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "never"


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _chart(history: Sequence[int], total: int) -> str:
    """60 one-minute bars, oldest on the left; the tallest bar is full height."""
    width, height, bar = 180, 28, 3
    peak = max(history, default=0) or 1
    bars = []
    for i, count in enumerate(history[-60:]):
        if count:
            h = max(1.0, height * count / peak)
            bars.append(
                f'<rect x="{i * bar}" y="{height - h:.1f}" width="{bar - 1}" height="{h:.1f}">'
                f"<title>{count} in minute -{59 - i}</title></rect>"
            )
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{total} delivered in the last hour">'
        f'<rect width="{width}" height="{height}" fill="#f5f5f5"/>'
        f'<g fill="#1565c0">{"".join(bars)}</g></svg>'
    )


def _canary(value: object) -> str:
    if not isinstance(value, dict):
        return '<span class="muted">not configured</span>'
    state = str(value.get("state", ""))
    cls = "ok" if state == "ok" else "muted" if state == "waiting" else "bad"
    text = f'<span class="badge {cls}">{html.escape(state)}</span>'
    trip = value.get("last_round_trip")
    if isinstance(trip, int | float):
        text += f" last round trip {_duration(trip)}"
    age = value.get("age")
    if isinstance(age, int | float) and age > 0:
        text += f", oldest in flight {_duration(age)}"
    if value.get("last_error"):
        text += f'<div class="err">{html.escape(redact(str(value["last_error"])))}</div>'
    return text


def _dead(entry: dict[str, Any]) -> str:
    dead = int(entry.get("dead") or 0)
    if not dead:
        return "0"
    ids = [str(i) for i in entry.get("dead_letter_ids") or []]
    command = "pop3bridge dlq replay " + (" ".join(ids) if ids else "--all")
    return f"{dead}<br><code>{html.escape(command)}</code>"


def _row(name: str, entry: dict[str, Any], now: float) -> str:
    esc = html.escape
    state = str(entry.get("state") or "ok")
    reason = str(entry.get("state_reason") or "")
    badge = f'<span class="badge {_STATE_CLASS.get(state, "warn")}">{esc(state)}</span>'
    if reason and state != "ok":
        badge += f'<div class="err">{esc(redact(reason))}</div>'
    success = entry.get("last_success_at")
    delivered = int(entry.get("delivered_last_hour") or 0)
    pending = int(entry.get("pending") or 0)
    oldest = entry.get("oldest_pending_age")
    pending_text = str(pending)
    if pending and isinstance(oldest, int | float):
        pending_text += f' <span class="muted">oldest {_duration(oldest)}</span>'
    error = entry.get("last_error")
    cells = [
        f"<th>{esc(redact(name))}</th>",
        f"<td>{badge}</td>",
        f'<td title="{esc(_when(success))}">{esc(_ago(success, now))}'
        f'<div class="muted">{int(entry.get("consecutive_failures") or 0)} failed in a row'
        f"</div>"
        f'<div class="muted">last poll {esc(_ago(entry.get("last_poll_at"), now))}, '
        f"{int(entry.get('last_new') or 0)} new</div>"
        f'<div class="muted">last new mail {esc(_ago(entry.get("last_new_at"), now))}</div>'
        f"</td>",
        f"<td>{_chart(entry.get('history') or [], delivered)}"
        f'<div class="muted">{delivered} in the last hour</div></td>',
        f"<td>{_duration(entry.get('latency_p50'))} / {_duration(entry.get('latency_p99'))}</td>",
        f"<td>{pending_text}</td>",
        f"<td>{_dead(entry)}</td>",
        f"<td>{_canary(entry.get('canary'))}</td>",
        f'<td class="err">{esc(redact(str(error))) if error else ""}</td>',
    ]
    return '<tr class="account">' + "".join(cells) + "</tr>"


_HEAD = (
    "Account",
    "State",
    "Last success",
    "Delivered (1 bar = 1 min)",
    "Latency p50 / p99",
    "Pending",
    "Dead letters",
    "Canary",
    "Last error",
)


def render_page(
    doc: dict[str, Any],
    ready: bool,
    checks: dict[str, str],
    problem: str | None = None,
    *,
    now: float,
) -> str:
    """The whole page for one status document (`Observer.status`) and readiness result."""
    esc = html.escape
    accounts = doc.get("accounts") or {}
    state = str(doc.get("state") or "ok")
    rows = [
        _row(str(name), entry, now)
        for name, entry in sorted(accounts.items())
        if isinstance(entry, dict)
    ]
    table = (
        "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _HEAD) + "</tr>"
        + "".join(rows) + "</table>"
        if rows
        else "<p>No accounts reported yet.</p>"
    )  # fmt: skip
    check_items = "".join(
        f"<li>{esc(check_label(name))}: {esc(redact(result))}</li>"
        for name, result in sorted(checks.items())
    )
    readiness = "ready" if ready else "NOT READY"
    note = f'<p class="err">Status unavailable: {esc(problem)}</p>' if problem else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        # No /favicon.ico request (a 404 in every browser console):
        '<link rel="icon" href="data:,">'
        f"<title>pop3bridge: {esc(state)}</title><style>{_CSS}</style></head><body>"
        f'<h1>pop3bridge <span class="badge {_STATE_CLASS.get(state, "warn")}" id="overall">'
        f"{esc(state)}</span></h1>"
        f'<p class="muted">This process is <b>{esc(readiness)}</b> · updated '
        f"{esc(_when(now))} · refreshes every {REFRESH_SECONDS} s · "
        '<a href="/status">JSON</a> · <a href="/metrics">metrics</a></p>'
        f'<ul class="muted">{check_items}</ul>{note}{table}'
        '<p class="muted">Deliveries and latency are this process\'s own; pending and dead '
        "letters come from the shared store.</p>"
        "</body></html>"
    )
