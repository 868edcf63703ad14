"""Log output: JSON lines / text, and no secret in any of them at any level."""

from __future__ import annotations

import base64
import io
import logging
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ops.logging import _alternatives, configure_logging, redact, register_secret

REGISTERED = "my-registered-secret-42"
PASS_ARG = "hunter2"
AUTH_B64 = base64.b64encode(b"\0alice\0plain-pass-99").decode()
BEARER = "eyJhbGciOi.bearer-token.sig"
URL_PASSWORD = "url-pw-7788"
WHSEC = "whsec_" + base64.b64encode(b"w" * 32).decode()
LEAKS = (REGISTERED, PASS_ARG, AUTH_B64, BEARER, URL_PASSWORD, WHSEC, "plain-pass-99")


def emit_everything(log: logging.Logger) -> None:
    log.debug("debug with %s", REGISTERED)
    log.info("C: PASS %s", PASS_ARG)
    log.info("C: AUTH PLAIN %s", AUTH_B64)
    log.warning("sending headers Authorization: Bearer %s", BEARER)
    log.warning("upstream pop3s://alice:%s@mail.example.com:995 refused", URL_PASSWORD)
    log.error("webhook secret %s rejected", WHSEC)
    log.info("extra fields", extra={"config": {"secret": REGISTERED}, "line": f"PASS {PASS_ARG}"})
    try:
        raise RuntimeError(f"login failed for token {REGISTERED}")
    except RuntimeError:
        log.exception("poll failed")
    log.critical("critical %s", REGISTERED, stack_info=True)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_reaches_the_output(fmt: str) -> None:
    buf = io.StringIO()
    configure_logging(fmt, "DEBUG", stream=buf)
    register_secret(REGISTERED)
    emit_everything(logging.getLogger("bridge.test"))
    out = buf.getvalue()
    assert out.count("\n") >= 9  # every record came out (the traceback adds lines in text)
    for leak in LEAKS:
        assert leak not in out, f"{leak!r} leaked in {fmt} output"
    # Redaction keeps what is useful to read.
    assert "PASS ***" in out and "AUTH PLAIN ***" in out and "pop3s://alice:***@" in out
    assert "RuntimeError" in out and "poll failed" in out


def test_json_lines_shape() -> None:
    buf = io.StringIO()
    configure_logging("json", "INFO", stream=buf)
    logging.getLogger("bridge.x").info("hello %s", "world", extra={"account": "support", "n": 3})
    logging.getLogger("bridge.x").debug("not shown at INFO")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    doc = orjson.loads(lines[0])
    assert doc["message"] == "hello world" and doc["level"] == "INFO"
    assert doc["logger"] == "bridge.x" and doc["account"] == "support" and doc["n"] == 3
    assert doc["timestamp"].endswith("Z")


def test_reconfigure_replaces_our_handler_only() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "INFO", stream=first)
    configure_logging("text", "INFO", stream=second)
    logging.getLogger("bridge.y").info("once")
    assert first.getvalue() == "" and second.getvalue().count("once") == 1


def test_invalid_settings_rejected() -> None:
    with pytest.raises(ValueError, match="format"):
        configure_logging("xml", "INFO")
    with pytest.raises(ValueError, match="level"):
        configure_logging("json", "CHATTY")


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("password=abc123 user=bob", "abc123"),
        ('{"client_secret": "cs-val"}', "cs-val"),
        ("APOP mrose c4c9334bac560ecc979e58001b3e22fb", "c4c9334bac560ecc979e58001b3e22fb"),
        ("authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("postgresql://app:pgpw@db/x", "pgpw"),
        ("auth plain AGFsaWNlAHB3", "AGFsaWNlAHB3"),  # clients may send lower case
        ("AUTH xoauth2 dXNlcj1h", "dXNlcj1h"),
        ("AUTH SCRAM-SHA-256 biwsbj11", "biwsbj11"),
    ],
)
def test_patterns(text: str, hidden: str) -> None:
    assert hidden not in redact(text)


def test_short_registered_values_are_ignored() -> None:
    register_secret("ab")
    assert redact("about abba") == "about abba"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text("abc\\|.*", min_size=1, max_size=8), min_size=1, max_size=12),
    st.text("abcx\\|.*", max_size=60),
)
def test_secret_pattern_picks_what_longest_first_alternation_picks(
    words: list[str], text: str
) -> None:
    # The prefix-tree pattern (cheap with thousands of secrets) against the plain alternation
    # with the longest words first: same matches, so a secret containing another goes whole.
    plain = re.compile("|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)))
    tree = re.compile(_alternatives(set(words)))
    assert tree.sub("*", text) == plain.sub("*", text)


def test_a_secret_containing_another_is_removed_whole() -> None:
    for value in ("pass-word", "pass-word-longer", "word-lo"):
        register_secret(value)
    assert redact("x pass-word-longer y pass-word z") == "x *** y *** z"


@pytest.mark.parametrize(
    "prose",
    [
        "AUTH refused by 127.0.0.1: Authentication failed.",
        "-ERR [AUTH] Authentication failed.",
        "AUTH is not offered by mail.example.com",
    ],
)
def test_prose_about_auth_keeps_its_words(prose: str) -> None:
    # A server's refusal is what a person needs to read; only SASL payloads are secrets.
    assert redact(prose) == prose


# --- lines a command writes for its caller ---------------------------------------------------


def test_console_with_json_logs_is_a_json_record_carrying_the_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bridge.ops.logging import console

    configure_logging("json", "WARNING")  # the level filters logs, not what a command owes
    register_secret(REGISTERED)
    console(
        f"listening pop3s 127.0.0.1 1995 {REGISTERED}",
        logger="bridge.commands.proxy",
        event="listening",
        listener="pop3s",
        port=1995,
    )
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    doc = orjson.loads(out)
    assert doc["event"] == "listening" and doc["listener"] == "pop3s" and doc["port"] == 1995
    assert doc["level"] == "INFO" and doc["logger"] == "bridge.commands.proxy"
    assert doc["message"] == "listening pop3s 127.0.0.1 1995 ***" and doc["timestamp"]


def test_console_with_text_logs_is_the_plain_message(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.ops.logging import console

    configure_logging("text", "INFO")
    console("ops http://127.0.0.1:8080", logger="x", event="ops", url="http://127.0.0.1:8080")
    console("pop3bridge proxy: PASS hunter2", logger="x", stream=__import__("sys").stderr)
    got = capsys.readouterr()
    assert got.out == "ops http://127.0.0.1:8080\n"
    assert got.err == "pop3bridge proxy: PASS ***\n"
