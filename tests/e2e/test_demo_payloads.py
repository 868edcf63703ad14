"""`pop3bridge demo` shows the user what a receiver gets, not only one line per webhook."""

from __future__ import annotations

import io
import json
import os
import re

from bridge.demo import run_demo


class Reader(io.StringIO):
    """Reads every payload file the moment the demo names it (the folder goes at the end)."""

    def __init__(self) -> None:
        super().__init__()
        self.payloads: dict[str, dict[str, object]] = {}

    def write(self, text: str) -> int:
        for path in re.findall(r"payload: (\S+\.json)", text):
            with open(path, encoding="utf-8") as fh:
                self.payloads[os.path.basename(path)] = json.load(fh)
        return super().write(text)


async def test_demo_says_where_payloads_are_and_suggests_peek() -> None:
    out = Reader()
    receiver = await run_demo(out, 3.0, install_signals=False, ops_port=None)
    text = out.getvalue()
    folder = re.search(r"payloads\s+(\S+)/", text)
    assert folder, text
    assert "pop3bridge peek --config FILE --account NAME" in text
    assert len(out.payloads) == len(receiver.received) >= 5
    for name, body in out.payloads.items():
        assert body["type"] == "message.received"
        assert f"{body['data']['id']}.json" == name  # type: ignore[index]
    assert not os.path.exists(folder.group(1))  # a temporary folder, and the demo says so
    assert "removed when the demo stops" in text
