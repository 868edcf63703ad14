"""Which login mechanism to use, and which to try next: pure rules, no I/O.

Theory of operation
-------------------
`Offer` is what one server offers on one connection: its SASL mechanisms (from CAPA), whether
its greeting carries an APOP timestamp, and whether the link is encrypted. `auto_order` turns
an offer and what the account has (a password or an OAuth token, `allow_plaintext`) into every
mechanism `auth: auto` may use, best first:

* with a token: OAUTHBEARER, then XOAUTH2 (XOAUTH2 alone when OAUTHBEARER is not offered:
  Microsoft 365 and Gmail accept it without announcing it);
* with a password on a TLS link whose certificate and host name were verified: PLAIN, then
  CRAM-MD5, LOGIN, APOP, USER. PLAIN (RFC 4616) carries the password in its initial response
  (RFC 5034), so the login is one exchange instead of CRAM-MD5's two, and it hands the
  password only to the server the certificate names, which has it anyway (CRAM-MD5 needs it
  stored in the clear);
* with a password on any other encrypted link (`insecure: true`, where a man in the middle
  could be the server): CRAM-MD5, PLAIN, LOGIN, APOP, USER;
* with a password on a plain link: CRAM-MD5, APOP (the two that never send the password),
  then PLAIN, LOGIN, USER only when `allow_plaintext` says so.

Only offered mechanisms are listed (USER always counts as offered; APOP when the greeting has
a timestamp). A refusal moves to the next one only when another mechanism might succeed
(`falls_back`): a plain refusal or `[AUTH]` (GNU mailutils and solid-pop3d announce APOP in
every greeting but refuse it for users without an APOP secret), or a server that hung up on
the attempt. A temporary failure (`[IN-USE]`, `[LOGIN-DELAY]`, `[SYS/TEMP]`) or `[SYS/PERM]`
stops the login: another mechanism would meet the same locked maildrop. The list never grows
by falling back, so a plaintext mechanism is reached only where `allow_plaintext` put it.

`after_refusal` also drops the mechanisms that check the same secret the same way as the
refused one: PLAIN, LOGIN and USER all hand the server the password as it is, so when one is
refused the others would be too, and OAUTHBEARER and XOAUTH2 carry the same token. Each extra
attempt with a wrong password is one more failure in the server's log (fail2ban, account
lockouts) and one more failure delay (Dovecot waits 2 s), so a wrong password costs one
attempt per kind of secret (APOP's digest, CRAM-MD5's, the password, the token), never one per
mechanism.

`check_allowed` is the one place that refuses a mechanism that would expose the secret on an
unencrypted link, whether it was chosen here or forced by the configuration.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from bridge.pop3.errors import (
    AuthenticationFailed,
    InsecureAuthRefused,
    LocalProtocolError,
    PermanentFailure,
    POP3Error,
    TemporaryFailure,
)
from bridge.records import record

__all__ = [
    "MECHANISMS",
    "PLAINTEXT_MECHANISMS",
    "Offer",
    "after_refusal",
    "auto_order",
    "check_allowed",
    "check_offered",
    "falls_back",
    "normalise",
    "offered",
]

# Every mechanism `login` knows, for `mechanism=`; "auto" picks among them.
MECHANISMS = ("USER", "APOP", "PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")
# These put a reusable secret on the wire (password or bearer token).
PLAINTEXT_MECHANISMS = frozenset({"USER", "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"})
_VERIFIED_ORDER = ("PLAIN", "CRAM-MD5", "LOGIN", "APOP", "USER")
_ENCRYPTED_ORDER = ("CRAM-MD5", "PLAIN", "LOGIN", "APOP", "USER")
_PLAIN_LINK_ORDER = ("CRAM-MD5", "APOP", "PLAIN", "LOGIN", "USER")


@record
class Offer:
    """What one server offers on one connection."""

    sasl: frozenset[str]
    apop: bool
    encrypted: bool
    # TLS with the certificate and host name checked: the peer is the server it names.
    verified: bool = False

    @classmethod
    def of(
        cls,
        capabilities: Mapping[str, tuple[str, ...]],
        *,
        apop: bool,
        encrypted: bool,
        verified: bool = False,
    ) -> Offer:
        sasl = frozenset(m.upper() for m in capabilities.get("SASL", ()))
        return cls(sasl, apop, encrypted, encrypted and verified)

    def offers(self, mech: str) -> bool:
        if mech == "USER":
            return True
        if mech == "APOP":
            return self.apop
        return mech in self.sasl


def normalise(mechanism: str) -> str:
    """`mechanism` upper-cased, "AUTO" or one of `MECHANISMS`; else `LocalProtocolError`."""
    mech = mechanism.upper()
    if mech != "AUTO" and mech not in MECHANISMS:
        raise LocalProtocolError(f"unknown mechanism {mechanism!r}; choose from {MECHANISMS}")
    return mech


def auto_order(
    offer: Offer, *, password: bool, token: bool, allow_plaintext: bool, host: str = "the server"
) -> list[str]:
    """Every mechanism `auth: auto` may try on this connection, best first (module docstring).

    Raises `LocalProtocolError` with neither a password nor a token, and `InsecureAuthRefused`
    when every offered mechanism would send the password in the clear and that is not allowed.
    """
    if token:
        if "OAUTHBEARER" in offer.sasl:
            return ["OAUTHBEARER", *(["XOAUTH2"] if "XOAUTH2" in offer.sasl else [])]
        return ["XOAUTH2"]
    if not password:
        raise LocalProtocolError("login needs a password or a token")
    if offer.verified:
        order = _VERIFIED_ORDER
    else:
        order = _ENCRYPTED_ORDER if offer.encrypted else _PLAIN_LINK_ORDER
    usable = [
        mech
        for mech in order
        if offer.offers(mech)
        and (offer.encrypted or allow_plaintext or mech not in PLAINTEXT_MECHANISMS)
    ]
    if not usable:
        raise InsecureAuthRefused(
            f"{host} offers only mechanisms that send the password in the clear over an "
            "unencrypted connection; use TLS, or allow plaintext explicitly"
        )
    return usable


def check_allowed(mech: str, *, encrypted: bool, allow_plaintext: bool, host: str) -> None:
    """Refuse a mechanism that would expose the secret on an unencrypted link."""
    if mech in PLAINTEXT_MECHANISMS and not encrypted and not allow_plaintext:
        raise InsecureAuthRefused(
            f"{mech} would send credentials to {host} unencrypted; use TLS, or allow "
            "plaintext explicitly"
        )


# Accepted by the big providers without being announced in CAPA (see `auto_order`).
_UNANNOUNCED_OK = frozenset({"XOAUTH2"})


def offered(offer: Offer) -> list[str]:
    """The mechanisms `offer` announces, in `MECHANISMS` order (USER always counts)."""
    return [mech for mech in MECHANISMS if offer.offers(mech)]


def check_offered(mech: str, offer: Offer, *, capa_known: bool, host: str) -> None:
    """Refuse a forced mechanism the server does not offer, before sending it.

    Servers answer an unknown AUTH mechanism in as many ways as there are servers (an -ERR
    with or without [AUTH], a dropped connection); one message that names what the server
    does offer sends the operator to the `auth:` setting, not to the password. SASL offers
    are only known when CAPA answered; APOP needs the greeting's timestamp, which is always
    known; XOAUTH2 is tried even unannounced (Gmail and Microsoft 365 accept it so).
    """
    if offer.offers(mech) or mech in _UNANNOUNCED_OK:
        return
    if mech != "APOP" and not capa_known:
        return
    raise AuthenticationFailed(
        f"{host} does not offer {mech}; it offers {', '.join(offered(offer))}"
        + ("" if capa_known else " (it does not answer CAPA)")
    )


def falls_back(error: POP3Error) -> bool:
    """Whether `auth: auto` should try the next mechanism after `error` (module docstring)."""
    if isinstance(error, TemporaryFailure | PermanentFailure):
        return False
    return isinstance(error, AuthenticationFailed)


# How the server checks the secret: mechanisms in one class stand or fall together.
_SECRET_CLASS = {
    "USER": "password",
    "PLAIN": "password",
    "LOGIN": "password",
    "APOP": "apop",
    "CRAM-MD5": "cram-md5",
    "XOAUTH2": "token",
    "OAUTHBEARER": "token",
}


def after_refusal(left: Sequence[str], refused: Collection[str]) -> list[str]:
    """What is still worth trying from `left` once the mechanisms in `refused` were refused."""
    gone = {_SECRET_CLASS[mech] for mech in refused}
    return [mech for mech in left if _SECRET_CLASS[mech] not in gone]
