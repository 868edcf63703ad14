"""PyYAML imported with its pure-Python reader's pattern compiled at first use (config/_yaml.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config._yaml import NON_PRINTABLE, LazyPattern, yaml

# In a fresh interpreter: what the configuration's import left in PyYAML and in `re`.
_AFTER_IMPORT = """
import json, re, sys
compile_ = re.compile
import bridge.config
import yaml.reader
pattern = yaml.reader.Reader.NON_PRINTABLE
state = [type(pattern).__name__, pattern._compiled is None, re.compile is compile_]
try:
    yaml.load("a: b\x07", Loader=yaml.SafeLoader)  # the pure-Python reader: compiles it now
except yaml.reader.ReaderError as exc:
    state.append(str(exc))
print(json.dumps(state))
"""


def test_the_configuration_imports_yaml_without_compiling_the_readers_pattern() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _AFTER_IMPORT], capture_output=True, text=True, check=True
    ).stdout
    # PyYAML spells the pattern as we do (else it would have been compiled), it is not compiled
    # yet, and `re.compile` is re's own again; the pure-Python loader then refuses a control
    # character exactly as with the pattern compiled up front (this process's, if it imported
    # yaml first; the message is checked below either way).
    *state, refused = json.loads(out)
    assert state == ["LazyPattern", True, True]
    with pytest.raises(yaml.reader.ReaderError) as exc:
        yaml.load("a: b\x07", Loader=yaml.SafeLoader)
    assert refused == str(exc.value)


texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=20) | st.sampled_from(
    ["", "plain", "a\x07b", "\x85\xa0", "\ud800", "\ufffe", "\U0010ffff", "\t\r\n", "é\x00"]
)


@given(text=texts)
def test_the_lazy_pattern_finds_what_the_compiled_one_does(text: str) -> None:
    lazy, real = LazyPattern(NON_PRINTABLE, 0), re.compile(NON_PRINTABLE)
    found, expected = lazy.search(text), real.search(text)
    assert (found and (found.span(), found.group())) == (
        expected and (expected.span(), expected.group())
    )
    assert lazy.pattern == real.pattern and lazy.flags == real.flags


def test_the_pure_python_loader_still_refuses_a_non_printable_character() -> None:
    assert yaml.safe_load("a: [1, 'x']") == {"a": [1, "x"]}
    with pytest.raises(yaml.reader.ReaderError) as exc:
        yaml.load("a: b\x07", Loader=yaml.SafeLoader)
    assert "#x0007: special characters are not allowed" in str(exc.value)
    assert "position 4" in str(exc.value)
