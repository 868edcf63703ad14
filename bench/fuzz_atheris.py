"""Coverage-guided fuzzing (atheris/libFuzzer) of the three parsers that take untrusted input.

    pip install -e '.[fuzz]'
    python bench/fuzz_atheris.py pop3   -atheris_runs=200000
    python bench/fuzz_atheris.py mail   -max_total_time=300      # seeded from tests/corpus/eml
    python bench/fuzz_atheris.py config -max_total_time=120

Any libFuzzer flag after the target name is passed through. libFuzzer prints the number of
inputs tried ("Done N runs in S second(s)") and, on a finding, writes the crashing input to
``crash-*`` in the current directory. A finding is any exception other than the target's typed
errors (POP3Error, ConfigError), or a payload that fails the published JSON Schema.

Not part of CI: hypothesis (tests/fuzz/) covers the same targets there with a fixed budget.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "mail"))

with atheris.instrument_imports():
    import bridge.mail as mail
    from bridge.config import ConfigError, load_settings
    from bridge.pop3.commands import ResponseKind
    from bridge.pop3.errors import POP3Error
    from bridge.pop3.events import ConnectionClosed, NeedData
    from bridge.pop3.wire import CommandReader, ResponseFramer

from mail_schema_check import check_payload  # noqa: E402 - needs the path set up above

_KINDS = list(ResponseKind)
_CONFIG_FILE = Path(tempfile.mkdtemp(prefix="pop3bridge-fuzz-")) / "config.yaml"


def _chunks(fdp: atheris.FuzzedDataProvider, data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        step = fdp.ConsumeIntInRange(1, 64)
        out.append(data[at : at + step])
        at += step
    return out


def _drain(target: ResponseFramer | CommandReader, parts: list[bytes]) -> None:
    for part in [*parts, b""]:
        target.receive_data(part)
        for _ in range(100_000):
            try:
                event = target.next_event()
            except POP3Error:
                if isinstance(target, ResponseFramer):
                    return  # the framer cannot resync; its typed error is the outcome
                continue
            if isinstance(event, NeedData | ConnectionClosed):
                break
        else:
            raise AssertionError("no progress after 100000 events: a loop without end")


def fuzz_pop3(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    framer = ResponseFramer()
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        framer.expect(_KINDS[fdp.ConsumeIntInRange(0, len(_KINDS) - 1)])
    reader = CommandReader(max_line=fdp.ConsumeIntInRange(8, 300))
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    _drain(framer, _chunks(atheris.FuzzedDataProvider(payload[::-1]), payload))
    _drain(reader, _chunks(atheris.FuzzedDataProvider(payload), payload))


def fuzz_mail(data: bytes) -> None:
    built = mail.build_message_data(data, attachment_inline_limit=512, include_raw=True)
    check_payload(built, len(data))


def fuzz_config(data: bytes) -> None:
    _CONFIG_FILE.write_bytes(data)
    try:
        load_settings(str(_CONFIG_FILE), env={})
    except ConfigError as exc:
        if not str(exc):
            raise AssertionError("ConfigError without a message") from exc


TARGETS = {"pop3": fuzz_pop3, "mail": fuzz_mail, "config": fuzz_config}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    name = sys.argv[1]
    args = [sys.argv[0], *sys.argv[2:]]
    if name == "mail" and not any(not a.startswith("-") for a in args[1:]):
        # libFuzzer writes new inputs into the FIRST corpus directory: a scratch one, so the
        # committed corpus is only read.
        scratch = tempfile.mkdtemp(prefix="pop3bridge-fuzz-corpus-")
        args += [scratch, str(ROOT / "tests" / "corpus" / "eml")]
    atheris.Setup(args, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
