"""`pop3bridge probe URL`: connect to one POP3 account and print what the server offers, as JSON.

Exit codes: 0 ok, 1 the probe could not start (bad URL, no password, an unreadable password or
CA file), 2 authentication failed, 3 connection or TLS failure (a connection dropped during
login included: it is not proof of a wrong password), 4 protocol error (also used for a -ERR
that is neither an authentication nor a connection problem). Every failure is also one line on
stderr. The password never appears in the output: it comes from a file, an environment
variable or a prompt (only when stdin is a terminal).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

from bridge.mail import header_uid
from bridge.pop3.client import MECHANISMS, POP3Client, TLSMode
from bridge.pop3.errors import (
    AuthenticationFailed,
    ConnectionLost,
    InsecureAuthRefused,
    POP3Error,
    ResponseError,
)

HELP = "check one POP3 account and print what the server offers, as JSON"

EXIT_OK, EXIT_START, EXIT_AUTH, EXIT_CONNECT, EXIT_PROTOCOL = 0, 1, 2, 3, 4
FIRST_UIDLS = 10
DEFAULT_TIMEOUT = 30.0

EPILOG = f"""\
exit codes:
  0  the login worked; the JSON on stdout says what the server offers
  1  the probe could not start: bad URL, no password (give --password-file or
     --password-env; there is no prompt without a terminal), unreadable file
  2  authentication failed (the server refused the credentials or the mechanism)
  3  connection or TLS failure, including a connection dropped during login
  4  protocol error (the server answered something POP3 does not allow)

The connect and read timeout is {DEFAULT_TIMEOUT:g} seconds unless --timeout says otherwise."""


class ProbeCannotStart(Exception):
    """The probe has what it needs only from the user: a URL, a password, readable files."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="pop3://user@host[:110] or pop3s://user@host[:995]")
    parser.add_argument("--starttls", action="store_true", help="upgrade pop3:// with STLS")
    parser.add_argument(
        "--auth", default="auto", metavar="MECH", help=f"auto or one of {', '.join(MECHANISMS)}"
    )
    parser.add_argument("--ca-file", help="PEM file of CAs to trust instead of the system store")
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify the server certificate"
    )
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-file",
        help="read the password (or token) from this file (one trailing newline is stripped, "
        "as for password_file in the configuration)",
    )
    secret.add_argument("--password-env", metavar="VAR", help="read it from this variable")
    parser.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="allow sending credentials over an unencrypted connection",
    )
    parser.add_argument("--no-pipelining", action="store_true", help="never pipeline commands")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="connect and read timeout (default: %(default)g)",
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _password(args: argparse.Namespace) -> str:
    from bridge.config.secret_source import strip_one_newline

    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as fh:
                return strip_one_newline(fh.read())
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ProbeCannotStart(
                f"cannot read --password-file {args.password_file}: {reason}"
            ) from None
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise ProbeCannotStart(f"environment variable {args.password_env} is not set")
        return value
    if not sys.stdin.isatty():
        raise ProbeCannotStart(
            "no password: give --password-file FILE or --password-env VAR "
            "(stdin is not a terminal, so there is no prompt)"
        )
    try:
        return getpass.getpass("POP3 password: ")
    except EOFError:
        raise ProbeCannotStart("no password was typed") from None


def _check_readable(option: str, path: str | None) -> None:
    if path is None:
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ProbeCannotStart(f"cannot read {option} {path}: {exc.strerror or exc}") from None


async def _probe(args: argparse.Namespace, out: dict[str, Any]) -> None:
    parts = urlsplit(args.url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or too big
    except ValueError as exc:
        raise ProbeCannotStart(f"bad port in {args.url!r}: {exc}") from None
    if parts.scheme not in ("pop3", "pop3s") or not parts.hostname or not parts.username:
        raise ProbeCannotStart("URL must look like pop3://user@host:110 or pop3s://user@host")
    _check_readable("--ca-file", args.ca_file)
    tls: TLSMode = (
        "implicit" if parts.scheme == "pop3s" else "starttls" if args.starttls else "none"
    )
    user = unquote(parts.username)
    secret = _password(args)
    oauth = args.auth.upper() in ("XOAUTH2", "OAUTHBEARER")
    out.update(host=parts.hostname, port=parts.port, tls=tls, user=user)
    client = await POP3Client.connect(
        parts.hostname,
        parts.port,
        tls=tls,
        ca_file=args.ca_file,
        insecure=args.insecure,
        connect_timeout=args.timeout,
        read_timeout=args.timeout,
        pipelining=not args.no_pipelining,
    )
    async with client:
        out["greeting"] = client.greeting.text
        out["apop_timestamp"] = client.greeting.timestamp is not None
        out["tls_version"] = client.tls_version
        out["tls_cipher"] = client.tls_cipher
        out["capabilities_before_login"] = _caps(client.capabilities)
        await client.login(
            user,
            None if oauth else secret,
            token=secret if oauth else None,
            mechanism=args.auth,
            allow_plaintext=args.allow_plaintext,
        )
        out["mechanism"] = client.mechanism
        out["capabilities"] = _caps(client.capabilities)
        out["pipelining"] = client.pipelining
        count, size = await client.stat()
        out["message_count"], out["total_size"] = count, size
        uidls = await client.uidl(header_id=header_uid) if count else []
        out["uidl_fallback"] = client.uidl_fallback
        out["first_uidls"] = [uid for _, uid in uidls[:FIRST_UIDLS]]
        await client.quit()  # nothing was retrieved or deleted: QUIT changes nothing


def _caps(caps: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    return {tag: list(params) for tag, params in caps.items()}


def _dropped_during_login(exc: AuthenticationFailed) -> ConnectionLost | None:
    """The connection loss behind an `AuthenticationFailed`, if that is what it was.

    The client reports a hang-up during login as a refusal (some servers do hang up on a
    wrong password), but for the person running `probe` a dropped connection is a network
    fact first: exit 3 with the server's behaviour named, not 2 and "check the password".
    """
    cause = exc.__cause__
    return cause if isinstance(cause, ConnectionLost) else None


def _classify(exc: BaseException) -> tuple[int, str, str]:
    """(exit code, kind, one-line message) for a failure of the probe."""
    if isinstance(exc, ProbeCannotStart):
        return EXIT_START, "CannotStart", str(exc)
    if isinstance(exc, AuthenticationFailed) and (lost := _dropped_during_login(exc)):
        return (
            EXIT_CONNECT,
            "ConnectionLost",
            f"{exc} ({lost}); a server may also hang up on a wrong password, so check it "
            "if this repeats",
        )
    if isinstance(exc, AuthenticationFailed | InsecureAuthRefused):
        return EXIT_AUTH, type(exc).__name__, str(exc)
    if isinstance(exc, ConnectionLost):  # includes TLSFailure and ReadTimeout
        return EXIT_CONNECT, type(exc).__name__, str(exc)
    if isinstance(exc, ResponseError | POP3Error):
        return EXIT_PROTOCOL, type(exc).__name__, str(exc)
    if isinstance(exc, OSError):
        return EXIT_CONNECT, type(exc).__name__, str(exc)
    raise exc


_WHAT = {
    EXIT_START: "cannot start",
    EXIT_AUTH: "authentication failed",
    EXIT_CONNECT: "connection failed",
    EXIT_PROTOCOL: "protocol error",
}


def run(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {"ok": False}
    code = EXIT_OK
    try:
        asyncio.run(_probe(args, out))
        out["ok"] = True
    except (ProbeCannotStart, POP3Error, OSError) as exc:
        code, kind, message = _classify(exc)
        out["error"] = {"kind": kind, "message": message}
        print(f"pop3bridge probe: {_WHAT[code]}: {message}", file=sys.stderr)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return code
