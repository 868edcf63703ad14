"""Link signing, path parsing, Content-Disposition and Range parsing (pure)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.attachments.server import content_disposition, parse_range
from bridge.attachments.signing import RAW, LinkSigner, LinkVerdict, link_path, parse_path
from tests.attachments.support import KEY, OLD_KEY

MSG = "msg_" + "ab" * 16


def _query(url: str) -> tuple[str, dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    return parts.path, dict(urllib.parse.parse_qsl(parts.query))


def test_a_minted_link_verifies_until_it_expires() -> None:
    signer = LinkSigner("https://h.test/base/", [KEY])
    url = signer.url(MSG, 3, 1000)
    path, q = _query(url)
    assert url.startswith("https://h.test/base/a/" + MSG + "/3?")
    rel = path.removeprefix("/base")
    assert signer.check(rel, q["expires"], q["signature"], 999.9) is LinkVerdict.OK
    assert signer.check(rel, q["expires"], q["signature"], 1000) is LinkVerdict.EXPIRED


def test_tampering_with_any_part_is_forbidden() -> None:
    signer = LinkSigner("https://h.test", [KEY])
    path, q = _query(signer.url(MSG, 0, 5000))
    sig, exp = q["signature"], q["expires"]
    assert signer.check(link_path(MSG, 1), exp, sig, 0) is LinkVerdict.FORBIDDEN
    assert signer.check(link_path(MSG, RAW), exp, sig, 0) is LinkVerdict.FORBIDDEN
    assert signer.check(path, "5001", sig, 0) is LinkVerdict.FORBIDDEN
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
    assert signer.check(path, exp, flipped, 0) is LinkVerdict.FORBIDDEN
    for bad_exp, bad_sig in [(None, sig), (exp, None), ("", sig), ("0x10", sig), (exp, sig + "=")]:
        assert signer.check(path, bad_exp, bad_sig, 0) is LinkVerdict.FORBIDDEN
    # An expired link with a wrong signature says nothing about expiry.
    assert signer.check(path, exp, flipped, 10**9) is LinkVerdict.FORBIDDEN


def test_rotation_signs_with_the_first_key_and_accepts_every_key() -> None:
    old = LinkSigner("https://h.test", [OLD_KEY])
    rotated = LinkSigner("https://h.test", [KEY, OLD_KEY])
    new_only = LinkSigner("https://h.test", [KEY])
    path, q = _query(old.url(MSG, 0, 5000))
    assert rotated.check(path, q["expires"], q["signature"], 0) is LinkVerdict.OK
    assert new_only.check(path, q["expires"], q["signature"], 0) is LinkVerdict.FORBIDDEN
    path, q = _query(rotated.url(MSG, 0, 5000))
    assert new_only.check(path, q["expires"], q["signature"], 0) is LinkVerdict.OK


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        LinkSigner("https://h.test", [b"short"])
    with pytest.raises(ValueError, match="at least one"):
        LinkSigner("https://h.test", [])


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/a",
        "/a/",
        f"/a/{MSG}",
        f"/a/{MSG}/",
        f"/a/{MSG}/-1",
        f"/a/{MSG}/01",
        f"/a/{MSG}/1/",
        f"/a/{MSG}/../1",
        f"/a/../{MSG}/1",
        f"/a/{MSG.upper()}/1",
        "/a/msg_123/1",
        f"/b/{MSG}/1",
        f"//a/{MSG}/1",
        f"/a/{MSG}/1%2f..",
        f"/a/{MSG}/ 1",
    ],
)
def test_only_link_paths_parse(path: str) -> None:
    assert parse_path(path) is None


def test_link_paths_round_trip() -> None:
    assert parse_path(link_path(MSG, 0)) == (MSG, 0)
    assert parse_path(link_path(MSG, 17)) == (MSG, 17)
    assert parse_path(link_path(MSG, RAW)) == (MSG, RAW)


@given(st.text(max_size=40))
def test_any_filename_gives_a_header_safe_disposition(name: str) -> None:
    value = content_disposition(name, "attachment-0")
    assert value.startswith('attachment; filename="')
    assert value.isascii()
    assert not any(c in value for c in "\r\n\x00")
    quoted = value.split('"')[1]
    assert "\\" not in quoted and "/" not in quoted


def test_non_ascii_filenames_use_rfc_8187() -> None:
    value = content_disposition("Rechnung März €.pdf", "x")
    assert value == (
        'attachment; filename="Rechnung M_rz _.pdf"; '
        "filename*=UTF-8''Rechnung%20M%C3%A4rz%20%E2%82%AC.pdf"
    )
    assert (
        content_disposition('a"b.txt', "x")
        == "attachment; filename=\"a_b.txt\"; filename*=UTF-8''a%22b.txt"
    )
    assert content_disposition(None, "attachment-3") == 'attachment; filename="attachment-3"'
    assert content_disposition("../../etc/passwd", "x").startswith(
        'attachment; filename=".._.._etc_passwd"'
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-10", (990, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=1000-", False),
        ("bytes=-0", False),
        ("bytes=5-1", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=x-1", None),
        ("bytes=-", None),
    ],
)
def test_range_header(header: str | None, expected: object) -> None:
    assert parse_range(header, 1000) == expected


def test_the_readme_attachments_example_loads(tmp_path: Path) -> None:
    import re

    import yaml

    from bridge.config import load_settings
    from bridge.runtime import link_minter

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "attachments:" in b]
    data = yaml.safe_load(block)
    key = tmp_path / "link-signing-key"
    key.write_text("r" * 44 + "\n")
    data["attachments"]["signing_key_file"] = str(key)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    settings = load_settings(str(config), {})
    links = link_minter(settings)
    assert links is not None and links.ttl == 7 * 86400
    assert settings.attachments.port == 8025 and settings.attachments.sweep_interval == 300
    assert links.signer.url("msg_" + "a" * 32, 0, 9).startswith("https://files.example.com/a/")
