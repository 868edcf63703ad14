"""`bridge.proxy.routing`: which route a login name takes, the name it logs in with upstream,
and the policy each route carries (pure; the proxy's use of it is in test_against_dovecot.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import ProxyConfig, ProxyPolicy, ProxyRoute
from bridge.proxy.policy import PolicyRules
from bridge.proxy.routing import RoutingTable, UnknownUser, policy_rules


def route(match: str, host: str, **extra: Any) -> ProxyRoute:
    upstream = {"host": host, "port": 110, "tls": "none"}
    return ProxyRoute.model_validate({"match": match, "upstream": upstream, **extra})


def table(*routes: ProxyRoute, policy: dict[str, Any] | None = None) -> RoutingTable:
    return RoutingTable(list(routes), ProxyPolicy.model_validate(policy or {}))


def test_exact_beats_domain_beats_default_wherever_they_stand() -> None:
    t = table(
        route("*", "default.test"),
        route("*@example.org", "domain.test"),
        route("ann@example.org", "exact.test"),
    )
    assert t.lookup("ann@example.org").upstream.host == "exact.test"
    assert t.lookup("bob@example.org").upstream.host == "domain.test"
    assert t.lookup("bob@example.net").upstream.host == "default.test"
    assert t.lookup("bare-name").upstream.host == "default.test"


def test_names_match_without_case_and_the_first_of_equal_patterns_wins() -> None:
    t = table(
        route("Ann@Example.ORG", "first.test"),
        route("ann@example.org", "second.test"),
        route("*@EXAMPLE.org", "domain-first.test"),
        route("*@example.org", "domain-second.test"),
    )
    assert t.lookup("ANN@example.org").upstream.host == "first.test"
    assert t.lookup("cy@Example.Org").upstream.host == "domain-first.test"


def test_no_match_and_no_default_is_unknown_user() -> None:
    t = table(route("ann@example.org", "exact.test"), route("*@example.org", "domain.test"))
    with pytest.raises(UnknownUser):
        t.lookup("bob@example.net")
    with pytest.raises(UnknownUser):
        t.lookup("example.org")  # a bare name is not in the domain
    # Nothing about the name is in the message (it is logged and may be a typo'd password).
    with pytest.raises(UnknownUser) as info:
        t.lookup("secret-looking@example.net")
    assert "secret-looking" not in str(info.value)


def test_rewrite_user_keeps_the_clients_case_unless_told_otherwise() -> None:
    t = table(
        route("*@moved.example", "new.test", rewrite_user="{local}"),
        route("*@split.example", "split.test", rewrite_user="{domain}+{local}@{domain}"),
        route("*", "same.test"),
    )
    ann = "Ann@Moved.Example"
    assert t.lookup(ann).upstream_user(ann) == "Ann"
    cy = "cy@split.example"
    assert t.lookup(cy).upstream_user(cy) == "split.example+cy@split.example"
    assert t.lookup("Bob@else.example").upstream_user("Bob@else.example") == "Bob@else.example"


def test_each_route_carries_its_own_policy_or_the_default() -> None:
    t = table(
        route("ro@example.org", "h.test", policy={"read_only": True, "max_errors": 2}),
        route("*", "h.test"),
        policy={"deny": ["TOP"], "max_connections_per_user": 3},
    )
    ro = t.lookup("ro@example.org").policy.rules
    assert ro.read_only and ro.max_errors == 2 and ro.deny == frozenset()
    default = t.lookup("any@example.org").policy.rules
    assert default.deny == frozenset({"TOP"}) and default.max_connections_per_user == 3
    assert not default.read_only


def test_fixed_upstream_sends_everyone_to_it_with_the_top_level_policy() -> None:
    config = ProxyConfig.model_validate(
        {
            "listeners": [{"name": "plain", "port": 0}],
            "upstream": {"host": "fixed.test", "port": 995, "tls": "implicit"},
            "policy": {"require_tls": True},
        }
    )
    t = RoutingTable.fixed(config)
    for user in ("ann@example.org", "anything", "X@Y.Z"):
        r = t.lookup(user)
        assert (r.upstream.host, r.upstream.port) == ("fixed.test", 995)
        assert r.upstream_user(user) == user and r.tap is None
        assert r.policy.rules.require_tls


def test_policy_rules_is_the_configuration_as_plain_data() -> None:
    config = ProxyPolicy.model_validate(
        {
            "allow": ["USER", "PASS", "STAT", "QUIT"],
            "deny": ["STAT"],
            "require_tls": True,
            "read_only": True,
            "max_errors": 7,
            "max_auth_attempts": 2,
            "max_connections_per_user": 4,
        }
    )
    assert policy_rules(config) == PolicyRules(
        allow=frozenset({"USER", "PASS", "STAT", "QUIT"}),
        deny=frozenset({"STAT"}),
        require_tls=True,
        read_only=True,
        max_errors=7,
        max_auth_attempts=2,
        max_connections_per_user=4,
    )
    assert policy_rules(ProxyPolicy()).allow is None  # no allow list: every verb
