"""`pop3bridge probe URL`: connect to one POP3 account and print what the server offers, as JSON.

Exit codes: 0 ok, 2 authentication failed, 3 connection or TLS failure, 4 protocol error (also
used for a -ERR that is neither an authentication nor a connection problem). The password never
appears in the output: it comes from a file, an environment variable or a prompt.
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

from bridge.pop3.client import MECHANISMS, POP3Client, TLSMode
from bridge.pop3.errors import (
    AuthenticationFailed,
    ConnectionLost,
    InsecureAuthRefused,
    POP3Error,
    ResponseError,
)

HELP = "check one POP3 account and print what the server offers, as JSON"

EXIT_OK, EXIT_AUTH, EXIT_CONNECT, EXIT_PROTOCOL = 0, 2, 3, 4
FIRST_UIDLS = 10


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
    secret.add_argument("--password-file", help="read the password (or token) from this file")
    secret.add_argument("--password-env", metavar="VAR", help="read it from this variable")
    parser.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="allow sending credentials over an unencrypted connection",
    )
    parser.add_argument("--no-pipelining", action="store_true", help="never pipeline commands")
    parser.add_argument("--timeout", type=float, default=30.0, help="connect/read timeout, s")


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise SystemExit(f"probe: environment variable {args.password_env} is not set")
        return value
    return getpass.getpass("POP3 password: ")


async def _probe(args: argparse.Namespace, out: dict[str, Any]) -> None:
    parts = urlsplit(args.url)
    if parts.scheme not in ("pop3", "pop3s") or not parts.hostname or not parts.username:
        raise SystemExit("probe: URL must look like pop3://user@host:110 or pop3s://user@host")
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
        uidls = await client.uidl() if count else []
        out["uidl_fallback"] = client.uidl_fallback
        out["first_uidls"] = [uid for _, uid in uidls[:FIRST_UIDLS]]
        await client.quit()  # nothing was retrieved or deleted: QUIT changes nothing


def _caps(caps: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    return {tag: list(params) for tag, params in caps.items()}


def run(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {"ok": False}
    code = EXIT_OK
    try:
        asyncio.run(_probe(args, out))
        out["ok"] = True
    except (AuthenticationFailed, InsecureAuthRefused) as exc:
        code = EXIT_AUTH
        out["error"] = {"kind": type(exc).__name__, "message": str(exc)}
    except ConnectionLost as exc:  # includes TLSFailure and ReadTimeout
        code = EXIT_CONNECT
        out["error"] = {"kind": type(exc).__name__, "message": str(exc)}
    except (ResponseError, POP3Error) as exc:
        code = EXIT_PROTOCOL
        out["error"] = {"kind": type(exc).__name__, "message": str(exc)}
    except OSError as exc:  # e.g. an unreadable --password-file or --ca-file
        code = EXIT_CONNECT
        out["error"] = {"kind": type(exc).__name__, "message": str(exc)}
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return code
