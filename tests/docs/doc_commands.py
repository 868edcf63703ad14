"""Every shell command the documentation shows, found in its code blocks, with the exit code the
docs promise for it: what tests/docs/test_doc_commands.py runs.

Theory of operation
-------------------
The documents are README.md and every docs/**/*.md; a new page or a new block is picked up by
itself. A command is a line of a fenced block whose info string is ``sh``, ``bash`` or ``shell``
(or a ``$ ``-prefixed line of a ``console`` block), with backslash continuations joined. Lines
that are only a comment are prose; a comment after a command stays on it (bash ignores it).

By default a command must exit 0. A block may say otherwise for some of its commands with an
HTML comment on the line right above its opening fence (invisible on the rendered page, in
plain sight in the source)::

    <!-- doc-test
    exit 1 "helm template t helm/pop3bridge --set poller.replicaCount=2"
    stop-after 3 "pop3bridge run"
    skip "docker " needs the image: tests/deploy/test_deploy_docker.py builds and runs it
    -->

One rule per line: an action, then the start of the commands it applies to (quoted), then
for ``skip`` the reason, which is required:

- ``exit N PREFIX``: the docs say this command exits N (say so in the prose too).
- ``stop-after SECONDS PREFIX``: a command that runs until it is stopped (`run`, `proxy`,
  `demo`): it must still be running after SECONDS, then gets SIGTERM and must exit 0.
- ``skip PREFIX REASON``: the one escape hatch, for commands that need what a test machine
  has not got (a Kubernetes cluster, a running container, the test suite itself). It is kept
  narrow: a ``pop3bridge`` command can never be skipped, a rule that matches no command is an
  error, and every skipped command is listed in the terminal summary of every run that
  includes tests/docs (tests/docs/conftest.py).

Everything else (which files exist, which placeholders become the suite's Dovecot and
receiver) is the runner's business, not the documents'.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DIRECTIVE",
    "DocCommand",
    "DocError",
    "Rule",
    "doc_files",
    "extract",
    "extract_text",
]

DIRECTIVE = "doc-test"
SHELL_LANGS = frozenset({"sh", "bash", "shell"})
CONSOLE_LANGS = frozenset({"console", "shell-session"})
# The product's own commands always run: no `skip` rule may match them.
NEVER_SKIPPED = ("pop3bridge", "python -m bridge", "python3 -m bridge")

_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")


class DocError(ValueError):
    """A `doc-test` directive is malformed or stale; the message names the file and line."""


@dataclass(frozen=True)
class Rule:
    action: str  # exit | stop-after | skip
    prefix: str
    value: float = 0.0  # the exit code, or the seconds before the stop
    reason: str = ""
    where: str = ""


@dataclass
class DocCommand:
    command: str
    where: str  # "README.md:59"
    expect_exit: int = 0
    stop_after: float | None = None
    skip_reason: str | None = None
    rules: list[Rule] = field(default_factory=list)

    @property
    def program(self) -> str:
        words = shlex.split(self.command, comments=True)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words.pop(0)  # VAR=value prefixes
        return words[0] if words else ""

    @property
    def id(self) -> str:
        return f"{self.where} {self.command.split('#')[0].strip()[:60]}"


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _parse_rules(lines: list[str], where: str) -> list[Rule]:
    rules = []
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        at = f"{where}+{offset + 1}"
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise DocError(f"{at}: {exc}: {line!r}") from None
        action = words[0]
        if action in {"exit", "stop-after"} and len(words) == 3:
            try:
                value = float(words[1])
            except ValueError:
                raise DocError(f"{at}: {action} needs a number: {line!r}") from None
            rules.append(Rule(action, words[2], value, where=at))
        elif action == "skip" and len(words) >= 3:
            rules.append(Rule("skip", words[1], reason=" ".join(words[2:]), where=at))
        else:
            raise DocError(
                f'{at}: expected `exit N "PREFIX"`, `stop-after SECONDS "PREFIX"` or '
                f'`skip "PREFIX" REASON`, got {line!r}'
            )
    return rules


def _commands(body: list[tuple[int, str]], lang: str, name: str) -> list[DocCommand]:
    out: list[DocCommand] = []
    pending = ""
    start = 0
    for number, line in body:
        if lang in CONSOLE_LANGS and not pending:
            if not line.startswith("$ "):
                continue  # output shown in the docs
            line = line[2:]
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(DocCommand((pending + line).strip(), f"{name}:{start}"))
        pending = ""
    if pending:
        out.append(DocCommand(pending.strip(), f"{name}:{start}"))
    return out


def extract_text(text: str, name: str) -> list[DocCommand]:
    """The commands of one document, with their rules applied (`DocError` if a rule is bad)."""
    lines = text.splitlines()
    commands: list[DocCommand] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        marker, lang = fence.group(1), fence.group(2).lower()
        rules = _directive_above(lines, i, name)
        body: list[tuple[int, str]] = []
        j = i + 1
        while j < len(lines) and not lines[j].startswith(marker):
            body.append((j + 1, lines[j]))
            j += 1
        if lang in SHELL_LANGS or lang in CONSOLE_LANGS:
            block = _commands(body, lang, name)
            _apply(rules, block)
            commands += block
        elif rules:
            raise DocError(f"{rules[0].where}: a {DIRECTIVE} rule above a {lang or 'plain'} block")
        i = j + 1
    return commands


def _directive_above(lines: list[str], fence: int, name: str) -> list[Rule]:
    k = fence - 1
    if k < 0 or lines[k].strip() != "-->":
        if k >= 0 and lines[k].strip().startswith(f"<!-- {DIRECTIVE}"):
            raise DocError(f"{name}:{k + 1}: write the {DIRECTIVE} rules on their own lines")
        return []
    top = k - 1
    while top >= 0 and not lines[top].lstrip().startswith("<!--"):
        top -= 1
    if top < 0 or lines[top].strip() != f"<!-- {DIRECTIVE}":
        return []
    return _parse_rules(lines[top + 1 : k], f"{name}:{top + 1}")


def _apply(rules: list[Rule], block: list[DocCommand]) -> None:
    for rule in rules:
        hits = [c for c in block if c.command.startswith(rule.prefix)]
        if not hits:
            raise DocError(f"{rule.where}: `{rule.prefix}` matches no command of the block below")
        for cmd in hits:
            cmd.rules.append(rule)
            if rule.action == "exit":
                cmd.expect_exit = int(rule.value)
            elif rule.action == "stop-after":
                cmd.stop_after = rule.value
            else:
                if cmd.program.startswith(NEVER_SKIPPED) or cmd.command.startswith(NEVER_SKIPPED):
                    raise DocError(
                        f"{rule.where}: `{cmd.command}` is pop3bridge's own command; those "
                        "always run (give it what it needs in the test instead)"
                    )
                cmd.skip_reason = rule.reason


def extract(root: Path) -> list[DocCommand]:
    commands: list[DocCommand] = []
    for path in doc_files(root):
        rel = str(path.relative_to(root))
        commands += extract_text(path.read_text(encoding="utf-8"), rel)
    return commands
