"""What `pop3bridge proxy` tells its caller on stdout, read from either form it takes."""

from __future__ import annotations

import json
from typing import Any


def parse_announcement(line: str) -> dict[str, Any] | None:
    """``listening NAME HOST PORT`` / ``ops URL`` (text logs) or the JSON object with the same
    facts as fields (JSON logs), as ``{"event": ..., ...}``; None for any other line."""
    line = line.strip()
    if line.startswith("{"):
        doc = json.loads(line)
        return doc if doc.get("event") in ("listening", "ops") else None
    words = line.split()
    if words[:1] == ["listening"] and len(words) == 4:
        return {"event": "listening", "listener": words[1], "host": words[2], "port": int(words[3])}
    if words[:1] == ["ops"] and len(words) == 2:
        return {"event": "ops", "url": words[1]}
    return None
