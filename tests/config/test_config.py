"""Loading and validating the configuration: YAML, env overlay, secrets, errors by key."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import (
    ConfigError,
    Settings,
    load_settings,
    parse_duration,
    parse_size,
    validate_account,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
PASSWORD = "correct-horse-battery"


def base_config() -> dict[str, Any]:
    return {
        "webhooks": [{"name": "main", "url": "https://example.com/hooks/mail", "secret": SECRET}],
        "accounts": [
            {
                "name": "support",
                "url": "pop3s://support%40example.com@mail.example.com:995",
                "password": PASSWORD,
                "webhook": "main",
            }
        ],
    }


def write(tmp_path: Path, data: dict[str, Any], name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


def test_issue_example_loads_with_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, base_config()), env={})
    acc = s.accounts[0]
    assert (acc.username, acc.host, acc.port, acc.tls) == (
        "support@example.com",
        "mail.example.com",
        995,
        "implicit",
    )
    assert acc.password is not None and acc.password.get_secret_value() == PASSWORD
    assert s.state.url == "sqlite:///var/lib/pop3bridge/state.db"
    assert (acc.poll_interval, acc.on_delivered, acc.initial, acc.auth) == (
        60,
        "keep",
        "all",
        "auto",
    )
    assert s.ops.host == "127.0.0.1" and s.ops.port == 8080 and s.ops.enabled
    assert s.webhooks[0].attachment_inline_limit == 1024 * 1024


@pytest.mark.parametrize(
    ("url", "extra", "expected"),
    [
        ("pop3s://a%40b.c@h.example:1995", {}, ("a@b.c", "h.example", 1995, "implicit")),
        ("pop3s://u@h", {}, ("u", "h", 995, "implicit")),
        ("pop3://u@h", {"allow_plaintext": True}, ("u", "h", 110, "none")),
        ("pop3://u@h", {"starttls": True}, ("u", "h", 110, "starttls")),
        ("pop3://u@h:2110", {"tls": "starttls"}, ("u", "h", 2110, "starttls")),
    ],
)
def test_account_url_forms(url: str, extra: dict[str, Any], expected: tuple[Any, ...]) -> None:
    acc = validate_account({"name": "a", "url": url, "password": "pw12", "webhook": "w", **extra})
    assert (acc.username, acc.host, acc.port, acc.tls) == expected


def test_url_password_moves_to_secret_and_out_of_url() -> None:
    acc = validate_account({"name": "a", "url": "pop3s://u:s3cretpw@h", "webhook": "w"})
    assert acc.password is not None and acc.password.get_secret_value() == "s3cretpw"
    assert "s3cretpw" not in (acc.url or "") and "s3cretpw" not in repr(acc)


def test_explicit_keys_without_url() -> None:
    acc = validate_account(
        {
            "name": "a",
            "host": "h",
            "tls": "none",
            "username": "u",
            "password": "x" * 5,
            "webhook": "w",
        }
    )
    assert acc.port == 110 and acc.tls == "none"


def test_url_conflicting_with_explicit_port_is_an_error() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_account(
            {"name": "a", "url": "pop3s://u@h:995", "port": 110, "password": "p", "webhook": "w"}
        )
    assert "port" in problems(exc)


def test_env_overrides_with_nesting_index_and_name(tmp_path: Path) -> None:
    env = {
        "POP3BRIDGE_ACCOUNTS__support__POLL_INTERVAL": "5m",
        "POP3BRIDGE_ACCOUNTS__0__ON_DELIVERED": "delete",
        "POP3BRIDGE_STATE__URL": "sqlite:///tmp/x.db",
        "POP3BRIDGE_LOGGING__LEVEL": "debug",
        "POP3BRIDGE_WEBHOOKS__main__HEADERS": '{"X-Team": "mail"}',
        "POP3BRIDGE_OPS__ENABLED": "false",
        # Not configuration: must be ignored, not rejected as unknown keys.
        "POP3BRIDGE_CONFIG": "/nonexistent",
        "POP3BRIDGE_TEST_DOVECOT": "/usr/sbin/dovecot",
    }
    s = load_settings(write(tmp_path, base_config()), env=env)
    assert s.accounts[0].poll_interval == 300
    assert s.accounts[0].on_delivered == "delete"
    assert s.state.url == "sqlite:///tmp/x.db"
    assert s.logging.level == "DEBUG"
    assert s.webhooks[0].headers["X-Team"].get_secret_value() == "mail"
    assert s.ops.enabled is False


def test_env_alone_can_build_a_config(tmp_path: Path) -> None:
    env = {
        "POP3BRIDGE_WEBHOOKS__0__NAME": "w",
        "POP3BRIDGE_WEBHOOKS__0__URL": "http://127.0.0.1:9/h",
        "POP3BRIDGE_WEBHOOKS__0__SECRET": SECRET,
        "POP3BRIDGE_ACCOUNTS__0__NAME": "a",
        "POP3BRIDGE_ACCOUNTS__0__URL": "pop3s://u@h",
        "POP3BRIDGE_ACCOUNTS__0__PASSWORD": "1234",  # numeric text stays text
        "POP3BRIDGE_ACCOUNTS__0__WEBHOOK": "w",
    }
    s = load_settings(None, env=env)
    assert s.accounts[0].password is not None
    assert s.accounts[0].password.get_secret_value() == "1234"


def test_config_path_from_env_variable(tmp_path: Path) -> None:
    path = write(tmp_path, base_config())
    s = load_settings(None, env={"POP3BRIDGE_CONFIG": path})
    assert s.accounts[0].name == "support"


def test_env_override_of_missing_list_element_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(
            write(tmp_path, base_config()), env={"POP3BRIDGE_ACCOUNTS__nobody__ENABLED": "false"}
        )
    assert "POP3BRIDGE_ACCOUNTS__nobody__ENABLED" in problems(exc)


def test_secret_files_and_env(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "hook1").write_text(SECRET + "\n")
    second = "whsec_" + base64.b64encode(b"z" * 24).decode()
    data = base_config()
    del data["accounts"][0]["password"]
    data["accounts"][0]["password_file"] = "pw"  # relative to the config file
    data["webhooks"][0].pop("secret")
    data["webhooks"][0]["secret_file"] = [str(tmp_path / "hook1")]
    data["accounts"].append(
        {"name": "b", "url": "pop3s://b@h", "password_env": "B_PASSWORD", "webhook": "main"}
    )
    s = load_settings(write(tmp_path, data), env={"B_PASSWORD": "from-env"})
    assert s.accounts[0].password is not None
    assert s.accounts[0].password.get_secret_value() == PASSWORD  # one trailing newline gone
    assert s.accounts[1].password is not None
    assert s.accounts[1].password.get_secret_value() == "from-env"
    secret = s.webhooks[0].secret
    assert isinstance(secret, list) and [x.get_secret_value() for x in secret] == [SECRET]
    data["webhooks"][0]["secret_file"] = None
    data["webhooks"][0]["secret"] = [SECRET, second]
    s = load_settings(write(tmp_path, data), env={"B_PASSWORD": "x" * 8})
    assert isinstance(s.webhooks[0].secret, list) and len(s.webhooks[0].secret) == 2


def test_only_one_trailing_newline_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pw with space \n\n")
    acc = validate_account(
        {"name": "a", "url": "pop3s://u@h", "password_file": str(tmp_path / "pw"), "webhook": "w"}
    )
    assert acc.password is not None and acc.password.get_secret_value() == "pw with space \n"


def test_missing_secret_sources_name_the_key(tmp_path: Path) -> None:
    data = base_config()
    del data["accounts"][0]["password"]
    data["accounts"][0]["password_file"] = str(tmp_path / "missing")
    data["webhooks"][0].pop("secret")
    data["webhooks"][0]["secret_env"] = "NOPE_NOT_SET"
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, data), env={})
    found = problems(exc)
    assert "does not exist" in found["accounts[0].password_file"]
    assert "NOPE_NOT_SET" in found["webhooks[0].secret_env"]


def test_oauth2_block(tmp_path: Path) -> None:
    (tmp_path / "rt").write_text("refresh-token-value\n")
    acc = validate_account(
        {
            "name": "gmail",
            "url": "pop3s://me%40gmail.com@pop.gmail.com",
            "auth": "xoauth2",
            "webhook": "w",
            "oauth2": {
                "token_url": "http://127.0.0.1:1/token",
                "client_id": "cid",
                "client_secret_env": "CS",
                "refresh_token_file": str(tmp_path / "rt"),
                "scope": "https://mail.google.com/",
            },
        },
        env={"CS": "client-secret-value"},
    )
    assert acc.oauth2 is not None and acc.password is None
    assert acc.oauth2.refresh_token is not None
    assert acc.oauth2.refresh_token.get_secret_value() == "refresh-token-value"
    assert acc.oauth2.client_secret is not None
    assert acc.oauth2.client_secret.get_secret_value() == "client-secret-value"
    with pytest.raises(ConfigError) as exc:
        validate_account({"name": "g", "url": "pop3s://u@h", "auth": "xoauth2", "webhook": "w"})
    assert "oauth2" in problems(exc)


# Each case: a change to the base config, and the key path the error must name.
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("unknown webhook", {"accounts.0.webhook": "mian"}, "accounts[0].webhook"),
    ("typo key", {"accounts.0.pasword": "x"}, "accounts[0].pasword"),
    ("bad duration", {"accounts.0.poll_interval": "5 fortnights"}, "accounts[0].poll_interval"),
    ("bad size", {"accounts.0.max_message_size": "big"}, "accounts[0].max_message_size"),
    ("bad enum", {"accounts.0.on_delivered": "purge"}, "accounts[0].on_delivered"),
    ("bad tls", {"accounts.0.tls": "ssl"}, "accounts[0].tls"),
    ("bad auth", {"accounts.0.auth": "kerberos"}, "accounts[0].auth"),
    ("no password", {"accounts.0.password": None}, "accounts[0].password"),
    ("two passwords", {"accounts.0.password_env": "X"}, "accounts[0].password"),
    ("bad port", {"accounts.0.url": "pop3s://u@h:99999"}, "accounts[0].url"),
    ("bad scheme", {"accounts.0.url": "imap://u@h"}, "accounts[0].url"),
    ("webhook url", {"webhooks.0.url": "ftp://x"}, "webhooks[0].url"),
    ("webhook secret", {"webhooks.0.secret": "whsec_!!notbase64"}, "webhooks[0].secret"),
    ("no secret", {"webhooks.0.secret": None}, "webhooks[0].secret"),
    ("max_attempts", {"webhooks.0.max_attempts": 0}, "webhooks[0].max_attempts"),
    ("state url", {"state.url": "mysql://x"}, "state.url"),
    ("log level", {"logging.level": "chatty"}, "logging.level"),
    ("log format", {"logging.format": "xml"}, "logging.format"),
    ("ops port", {"ops.port": 70000}, "ops.port"),
    ("jitter", {"poller.jitter": 2}, "poller.jitter"),
    ("proxy verbs", {"proxy.policy.deny": ["RETR", "FROB"]}, "proxy.policy.deny"),
    (
        "proxy listener without upstream",
        {"proxy.listeners": [{"name": "p", "port": 1110}]},
        "proxy.upstream",
    ),
    (
        "tls listener without cert",
        {
            "proxy.listeners": [{"name": "p", "port": 1995, "tls": "implicit"}],
            "proxy.upstream": {"host": "h"},
        },
        "proxy.listeners[0].cert_file",
    ),
    (
        "route pattern",
        {"proxy.routes": [{"match": "a@*", "upstream": {"host": "h"}}]},
        "proxy.routes[0].match",
    ),
    (
        "tap webhook",
        {"proxy.routes": [{"match": "*", "upstream": {"host": "h"}, "tap": {"webhook": "x"}}]},
        "proxy.routes[0].tap.webhook",
    ),
    (
        "duplicate account",
        {
            "accounts.1": {
                "name": "support",
                "url": "pop3s://x@h",
                "password": "pwpw",
                "webhook": "main",
            }
        },
        "accounts[1].name",
    ),
    ("unknown section", {"pollers": {}}, "pollers"),
]


def apply(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            if int(last) == len(node):
                node.append(value)
            else:
                node[int(last)] = value
        else:
            node[last] = value
    return data


@pytest.mark.parametrize(("case", "changes", "key"), INVALID, ids=[c[0] for c in INVALID])
def test_every_error_names_its_key(case: str, changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_dict(apply(base_config(), changes))
    assert key in problems(exc), f"{case}: {exc.value}"
    assert str(exc.value).count("\n") + 1 == len(exc.value.problems)
    # The offending values never appear in the message (they may be secrets in the wrong key).
    assert PASSWORD not in str(exc.value) and SECRET not in str(exc.value)


def load_dict(data: dict[str, Any]) -> Settings:
    from bridge.config import validate  # the same entry load_settings uses after its sources

    result: Settings = validate(Settings, data, {"env": {}})
    return result


def test_all_problems_reported_together(tmp_path: Path) -> None:
    data = apply(
        base_config(),
        {"accounts.0.webhook": "mian", "accounts.0.poll_interval": "x", "logging.level": "no"},
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, data), env={})
    assert {"accounts[0].webhook", "accounts[0].poll_interval", "logging.level"} <= set(
        problems(exc)
    )
    assert "no webhook named 'mian'" in problems(exc)["accounts[0].webhook"]


def test_settings_from_dict_and_secrets_never_print() -> None:
    s = Settings.model_validate(base_config())
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump())):
        assert PASSWORD not in text and SECRET not in text


def test_wrongly_typed_secret_value_not_echoed() -> None:
    data = apply(base_config(), {"accounts.0.poll_interval": PASSWORD})
    with pytest.raises(ConfigError) as exc:
        load_dict(data)
    assert PASSWORD not in str(exc.value)


def test_yaml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("accounts: [\n  - name: x\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(str(bad), env={})
    assert "line" in str(exc.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "nope.yaml"), env={})


def test_proxy_section_and_helm_style_booleans() -> None:
    data = base_config()
    data["proxy"] = {
        "listeners": [
            {
                "name": "pop3",
                "host": "0.0.0.0",
                "port": 1110,
                "starttls": True,
                "cert_file": "c",
                "key_file": "k",
            },
            {
                "name": "pop3s",
                "port": 1995,
                "tls": True,
                "cert_file": "c",
                "key_file": "k",
                "proxy_protocol": True,
            },
        ],
        "routes": [
            {
                "match": "*@example.com",
                "upstream": {"host": "h", "tls": "starttls"},
                "rewrite_user": None,
                "policy": {"deny": ["dele"], "read_only": True},
                "tap": {"webhook": "main"},
            },
            {"match": "*", "upstream": {"host": "h2", "tls": True}},
        ],
        "policy": {"allow": None, "max_connections_per_ip": 10, "idle_timeout": "10m"},
    }
    p = load_dict(data).proxy
    assert p.listeners[1].tls == "implicit" and p.listeners[0].tls == "none"
    assert p.routes is not None and p.routes[0].upstream.port == 110
    assert p.routes[1].upstream.port == 995
    assert p.routes[0].policy is not None and p.routes[0].policy.deny == ["DELE"]
    assert p.policy.idle_timeout == 600


# In a fresh interpreter: which of the proxy's models pydantic has built (compiled their
# validators) after importing the configuration, after loading one without `proxy:`, then one
# with it.
_PROXY_BUILT = """
import json
from bridge.config import Settings, proxy, validate

models = [proxy.ProxyConfig, proxy.ProxyPolicy, proxy.ProxyUpstream, proxy.ProxyTap,
          proxy.ProxyRoute, proxy.ProxyListener]
def built():
    return [m.__name__ for m in models if m.__pydantic_complete__]
seen = [built()]
s = validate(Settings, {}, {"env": {}})
assert s.proxy.listeners == [] and s.proxy.policy.idle_timeout == 600
seen.append(built())
validate(Settings, {"proxy": {"upstream": {"host": "h"}}}, {"env": {}})
seen.append(built())
print(json.dumps(seen))
"""


def test_the_proxy_models_are_built_only_for_a_proxy_section() -> None:
    """~35 M instructions of every start-up (bridge/config/proxy.py's docstring)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROXY_BUILT], capture_output=True, text=True, check=True
    ).stdout
    imported, without, given = yaml.safe_load(out)
    assert imported == [] and without == []
    assert "ProxyConfig" in given  # its nested models are built into its validator


def test_the_absent_proxy_section_is_the_models_defaults() -> None:
    from bridge.config import ProxyConfig, ProxyPolicy

    absent = load_dict(base_config()).proxy
    for made, validated in ((absent, ProxyConfig()), (absent.policy, ProxyPolicy())):
        assert type(made) is type(validated) and made == validated
        assert repr(made) == repr(validated)
        assert made.model_fields_set == validated.model_fields_set == set()
        assert made.model_dump(mode="json") == validated.model_dump(mode="json")
    assert absent.model_dump() == load_dict({**base_config(), "proxy": {}}).proxy.model_dump()


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (None, [("proxy", "Input should be a valid dictionary or instance of ProxyConfig")]),
        ([], [("proxy", "Input should be a valid dictionary or instance of ProxyConfig")]),
        (
            {"listeners": [{"name": "a", "port": "x"}], "upstream": {"host": "h"}, "bogus": 1},
            [
                (
                    "proxy.listeners[0].port",
                    "Input should be a valid integer, unable to parse string as an integer",
                ),
                (
                    "proxy.bogus",
                    "unknown key (check the spelling; see `pop3bridge config reference`)",
                ),
            ],
        ),
        (
            {
                "shutdown_grace": "5 parsecs",
                "routes": [
                    {"match": "*", "upstream": {"host": "h", "port": 0}, "rewrite_user": "{nope}"}
                ],
            },
            [
                ("proxy.routes[0].upstream.port", "Input should be greater than or equal to 1"),
                (
                    "proxy.routes[0].rewrite_user",
                    "only {user}, {local} and {domain} may appear in braces (write {{ for {)",
                ),
                (
                    "proxy.shutdown_grace",
                    "expected seconds or a duration with units ms, s, m, h, d, e.g. '30s' or '5m'",
                ),
            ],
        ),
    ],
)
def test_a_given_proxy_section_reports_every_problem_by_key(
    section: Any, expected: list[tuple[str, str]]
) -> None:
    """As when `Settings.proxy` was a plain nested model (the lists are that code's output)."""
    with pytest.raises(ConfigError) as exc:
        load_dict({**base_config(), "poller": {"bogus": 1}, "proxy": section})
    assert exc.value.problems == [
        ("poller.bogus", "unknown key (check the spelling; see `pop3bridge config reference`)"),
        *expected,
    ]


def test_proxy_only_config_without_accounts() -> None:
    s = load_dict(
        {
            "proxy": {
                "listeners": [{"name": "p", "port": 1110}],
                "upstream": {"host": "pop.example.com", "port": 995},
            }
        }
    )
    assert s.accounts == [] and s.proxy.upstream is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1024, 1024),
        ("50MB", 50_000_000),
        ("1MiB", 1 << 20),
        ("1.5 KiB", 1536),
        ("10b", 10),
        ("2gb", 2 * 10**9),
    ],
)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (10, 10.0),
        (2.5, 2.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1d", 86400.0),
        ("45", 45.0),
    ],
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


# "1h 30": a trailing number without a unit is ambiguous (30 s? 30 min?), so it is refused.
@pytest.mark.parametrize("bad", ["", "m5", "5x", "-3", True, "1h 30", None, "nan", "inf"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(0, 48), m=st.integers(0, 59), s=st.integers(0, 59))
def test_duration_round_trip(h: int, m: int, s: int) -> None:
    text = "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"
    assert parse_duration(text) == h * 3600 + m * 60 + s


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 10**6), unit=st.sampled_from(["B", "KB", "MB", "KiB", "MiB", "GiB"]))
def test_size_units(n: int, unit: str) -> None:
    factor = {"B": 1, "KB": 1000, "MB": 10**6, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}
    assert parse_size(f"{n}{unit}") == n * factor[unit]


def test_os_environ_is_the_default_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POP3BRIDGE_ACCOUNTS__0__POLL_INTERVAL", "7")
    s = load_settings(write(tmp_path, base_config()))
    assert s.accounts[0].poll_interval == 7
    assert os.environ["POP3BRIDGE_ACCOUNTS__0__POLL_INTERVAL"] == "7"
