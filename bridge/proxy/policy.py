"""What a client may do through the proxy, and what it is told the server can do.

Decisions are pure functions of the command, the session state and whether the client link is
encrypted, so the relay can take them the moment a command is read and answer a refused one in
its place in the pipeline.

Read-only: DELE is the only POP3 command that marks a message for removal, but it is not the
only way a mailbox shrinks: a server advertising ``EXPIRE 0`` (RFC 2449 §6.7) may remove every
message that was retrieved once the session reaches UPDATE. UPDATE is only ever entered by QUIT
(RFC 1939 §6), so a read-only session also answers QUIT itself in TRANSACTION and drops the
upstream connection without sending it: whatever the server's retention rules, nothing is
committed. RSET only undoes marks, so it stays allowed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.pop3.commands import LOGIN_VERBS
from bridge.pop3.events import Command
from bridge.pop3.state import State

__all__ = [
    "PROXY_CAPABILITIES",
    "Decision",
    "Policy",
    "PolicyRules",
    "Verdict",
    "rewrite_capa",
]


# Capability tags the proxy knows how to relay (RFC 2449 §6, RFC 2595, RFC 5034, RFC 6856).
# A tag outside this set is dropped from CAPA: the proxy could not frame what it announces.
PROXY_CAPABILITIES = frozenset(
    {
        "TOP", "USER", "SASL", "RESP-CODES", "LOGIN-DELAY", "PIPELINING", "EXPIRE", "UIDL",
        "IMPLEMENTATION", "AUTH-RESP-CODE", "UTF8", "LANG", "STLS",
    }
)  # fmt: skip

# Capability tag -> the command it announces; dropped when that command is refused.
_CAPABILITY_VERB = {
    "TOP": "TOP",
    "USER": "USER",
    "UIDL": "UIDL",
    "SASL": "AUTH",
    "UTF8": "UTF8",
    "LANG": "LANG",
}


class Decision(enum.Enum):
    FORWARD = "forward"
    DENY = "deny"  # answered -ERR by the proxy, never reaches upstream
    LOCAL_QUIT = "local-quit"  # read-only QUIT: answered +OK here, upstream dropped without QUIT


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    reply: bytes = b""  # the whole status line (CRLF included) for DENY / LOCAL_QUIT


_DENIED = Verdict(Decision.DENY, b"-ERR command not allowed by proxy policy\r\n")
_NEED_TLS = Verdict(Decision.DENY, b"-ERR authentication requires TLS: send STLS first\r\n")
_READ_ONLY_QUIT = Verdict(
    Decision.LOCAL_QUIT, b"+OK read-only mailbox: session ended, nothing changed\r\n"
)
_FORWARD = Verdict(Decision.FORWARD)


@dataclass(frozen=True, slots=True)
class PolicyRules:
    """A policy as plain data: what the configuration's `policy:` says, below the config layer
    (`bridge.proxy.routing.policy_rules` makes one from the pydantic model)."""

    allow: frozenset[str] | None = None  # verbs (upper case); None: every verb
    deny: frozenset[str] = frozenset()
    require_tls: bool = False
    read_only: bool = False
    max_errors: int = 5
    max_auth_attempts: int = 3
    max_connections_per_user: int | None = None


class Policy:
    """One route's policy (or the default one) in a form the relay can ask quickly."""

    def __init__(self, rules: PolicyRules) -> None:
        self.rules = rules
        self.allow = rules.allow
        deny = set(rules.deny)
        if rules.read_only:
            deny.add("DELE")
        self.deny = frozenset(deny)
        self.require_tls = rules.require_tls
        self.read_only = rules.read_only

    def refused(self, verb: str) -> bool:
        """Whether policy refuses `verb` outright (QUIT is never refused: a client must be able
        to leave)."""
        if verb == "QUIT":
            return False
        if self.allow is not None and verb not in self.allow:
            return True
        return verb in self.deny

    def decide(self, command: Command, state: State, *, encrypted: bool) -> Verdict:
        return self.decide_verb(command.verb, state, encrypted=encrypted)

    def decide_verb(self, verb: str, state: State, *, encrypted: bool) -> Verdict:
        """`decide` for a verb alone (no argument changes a decision)."""
        if self.refused(verb):
            return _DENIED
        if self.require_tls and not encrypted and verb in LOGIN_VERBS:
            return _NEED_TLS
        if self.read_only and verb == "QUIT" and state is State.TRANSACTION:
            return _READ_ONLY_QUIT
        return _FORWARD

    def hidden_capabilities(self, *, encrypted: bool) -> frozenset[str]:
        """Capability tags the client must not see, given this policy and the link."""
        hidden = {tag for tag, verb in _CAPABILITY_VERB.items() if self.refused(verb)}
        if self.require_tls and not encrypted:
            hidden |= {"USER", "SASL"}
        return frozenset(hidden)


def rewrite_capa(
    body: bytes,
    *,
    hidden: Iterable[str],
    offer_stls: bool,
    sasl_mechanisms: Iterable[str] | None = None,
) -> bytes:
    """The CAPA body (un-stuffed, ends of lines as the server sent them) the client should see.

    Keeps the upstream's own lines byte for byte when they survive; drops tags the proxy cannot
    relay or policy hides, drops the upstream's STLS (the proxy owns TLS on each leg) and adds
    its own when the listener offers STLS. `sasl_mechanisms`, when given, narrows the SASL line
    to those mechanisms (routing mode can only take PLAIN and LOGIN from a client).
    """
    hidden_tags = frozenset(hidden)
    sep = b"\r\n" if body.endswith(b"\r\n") or not body.endswith(b"\n") else b"\n"
    allowed_mechs = None if sasl_mechanisms is None else [m.upper() for m in sasl_mechanisms]
    out: list[bytes] = []
    for line in body.splitlines(keepends=True):
        words = line.split()
        if not words:
            continue
        tag = words[0].decode("ascii", "replace").upper()
        if tag not in PROXY_CAPABILITIES or tag in hidden_tags or tag == "STLS":
            continue
        if tag == "SASL" and allowed_mechs is not None:
            offered = {w.decode("ascii", "replace").upper() for w in words[1:]}
            keep = [m for m in allowed_mechs if m in offered]
            if not keep:
                continue
            line = b"SASL " + " ".join(keep).encode("ascii") + sep
        out.append(line)
    if offer_stls:
        out.append(b"STLS" + sep)
    return b"".join(out)
