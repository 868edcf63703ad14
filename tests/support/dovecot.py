"""A private Dovecot 2.3 for integration tests, started from a generated config.

Nothing here touches /etc/dovecot or the system instance: base_dir, state_dir, the log, the
passwd-file and every maildir live in one temporary directory, and both listeners bind to
127.0.0.1 on free ports.

Users
-----
Each user has a one-line passwd-file (``passwd.d/<name>``) serving as passdb and userdb, so
`add_user` takes effect immediately while the server runs. Passwords use the PLAIN scheme because
APOP and CRAM-MD5 need the cleartext secret on the server.

Ownership
---------
Dovecot refuses to access mail as uid 0. When the tests run as root the mail user is `nobody`
(internal/login processes use the packaged `dovecot`/`dovenull` accounts) and delivered files are
chowned to it; as an ordinary user every process and file belongs to that user. The temporary
directory is created outside pytest's 0700 tmp tree so the mail user can reach it.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psutil  # type: ignore[import-untyped]

from tests.support import require_service
from tests.support.certs import TestCerts

__all__ = [
    "ONE_LOGIN_PROCESS",
    "DovecotError",
    "DovecotServer",
    "DovecotUser",
    "OneLoginProcessDovecot",
    "dovecot_available",
    "free_port",
    "lmtp_available",
    "running",
]

DOVECOT = "dovecot"
DOVECOT_ENV = "POP3BRIDGE_TEST_DOVECOT"  # path of another dovecot binary (or a missing one)
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_GRACE = 2.0  # a clean Dovecot shutdown takes about 1 s


class DovecotError(RuntimeError):
    """The private Dovecot could not be configured, started or stopped (see `log_text()`)."""


@dataclass(frozen=True)
class DovecotUser:
    name: str
    password: str
    home: Path

    @property
    def maildir(self) -> Path:
        return self.home / "Maildir"


def dovecot_available(exe: str | None = None) -> tuple[bool, str]:
    """Whether a usable `dovecot` binary (default: the installed one) exists, and if not, why."""
    exe = exe or os.environ.get(DOVECOT_ENV)
    if exe is None:
        exe = shutil.which(DOVECOT) or (
            "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
        )
    elif not Path(exe).exists():
        exe = None
    if exe is None:
        return False, "the dovecot binary is not installed (apt-get install dovecot-pop3d)"
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        return False, f"{exe} cannot run: {exc}"
    if out.returncode != 0 or not out.stdout.startswith("2."):
        return False, f"{exe} --version failed: {out.stderr.strip() or out.stdout.strip()}"
    if not any(Path(d, "pop3").exists() for d in ("/usr/lib/dovecot", "/usr/libexec/dovecot")):
        return False, "dovecot is installed without POP3 support (apt-get install dovecot-pop3d)"
    return True, out.stdout.strip()


def lmtp_available() -> bool:
    return any(Path(d, "lmtp").exists() for d in ("/usr/lib/dovecot", "/usr/libexec/dovecot"))


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (racy, like every such helper)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dovecot_exe() -> str:
    return os.environ.get(DOVECOT_ENV) or shutil.which(DOVECOT) or "/usr/sbin/dovecot"


def _doveadm_exe() -> str:
    return shutil.which("doveadm") or "/usr/bin/doveadm"


class DovecotServer:
    """One private Dovecot instance. Construct, then `start()`; `stop()` kills it for good.

    `start()`/`stop()` may be repeated (restart tests); ports stay the same across restarts.
    """

    host = "127.0.0.1"

    def __init__(
        self, certs: TestCerts, *, root: Path | None = None, lock_sessions: bool = False
    ) -> None:
        self._certs = certs
        # pop3_lock_session: a second session on a maildrop gets -ERR [IN-USE], as on servers
        # that lock per session; tests of several pollers use it to see any overlap.
        self.lock_sessions = lock_sessions
        self.root = root or Path(tempfile.mkdtemp(prefix="pop3bridge-dovecot-"))
        self.root.chmod(0o755)
        self.base_dir = self.root / "run"
        self.state_dir = self.root / "state"
        self.homes = self.root / "home"
        self.config_file = self.root / "dovecot.conf"
        self.passwd_dir = self.root / "passwd.d"
        self.log_file = self.root / "dovecot.log"
        # Dovecot titles its children "dovecot-<instance>/<service>": lets stop() find them.
        self.instance_name = f"pop3bridge-test-{self.root.name}"
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        # LMTP into the same mailboxes (`RCPT TO:<user@anything>`) where dovecot-lmtpd is
        # installed: the freshness canary's tests submit through it.
        self.lmtp_port: int | None = free_port() if lmtp_available() else None
        self._users: dict[str, DovecotUser] = {}
        self._lock = threading.Lock()
        self._counter = 0
        self._running = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._startup_log: BinaryIO | None = None
        if os.geteuid() == 0:
            mail = pwd.getpwnam("nobody")
            self._mail_uid, self._mail_gid = mail.pw_uid, mail.pw_gid
            self._internal_user, self._login_user = "dovecot", "dovenull"
        else:
            me = pwd.getpwuid(os.geteuid())
            self._mail_uid, self._mail_gid = me.pw_uid, me.pw_gid
            self._internal_user = self._login_user = me.pw_name
        for d in (self.base_dir, self.state_dir, self.homes, self.passwd_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.homes.chmod(0o755)
        self.passwd_dir.chmod(0o755)
        self.config_file.write_text(self._config())

    # -- public API -------------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        return self._certs.ca_file

    @property
    def certs(self) -> TestCerts:
        return self._certs

    @property
    def running(self) -> bool:
        return self._running

    def add_user(self, name: str | None = None, password: str | None = None) -> DovecotUser:
        """Create a mail user (random name/password when omitted) with an empty maildir."""
        name = name or f"u{secrets.token_hex(6)}"
        password = password if password is not None else secrets.token_urlsafe(12)
        if not name or any(c in name for c in ":/\n\r\0") or name.startswith("."):
            raise ValueError(f"unusable user name {name!r}")
        if any(c in password for c in ":\n\r\0"):
            raise ValueError("passwords may not contain ':', CR, LF or NUL (passwd-file format)")
        with self._lock:
            if name in self._users:
                raise ValueError(f"user {name!r} already exists")
            home = self.homes / name
            user = DovecotUser(name, password, home)
            for sub in ("", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
                d = home / sub
                d.mkdir(mode=0o700, exist_ok=True)
                os.chown(d, self._mail_uid, self._mail_gid)
            self._users[name] = user
            self._write_passwd(user)
        return user

    def add_users(self, count: int, prefix: str | None = None) -> list[DovecotUser]:
        """`count` users named `<prefix>-NNN` (random prefix when omitted), created in one go."""
        stem = prefix or f"u{secrets.token_hex(4)}"
        return [self.add_user(f"{stem}-{i:03d}") for i in range(count)]

    def user(self, name: str) -> DovecotUser:
        return self._users[name]

    def plain_account(self, user: DovecotUser, name: str) -> dict[str, str | int | bool]:
        """Account keys for logging in as `user` over plain POP3 on loopback (USER/PASS
        explicitly allowed), delivering to webhook `main`: what the benchmarks use, so that
        TLS costs no contender anything."""
        return {
            "name": name,
            "host": self.host,
            "port": self.pop3_port,
            "tls": "none",
            "allow_plaintext": True,
            "username": user.name,
            "password": user.password,
            "webhook": "main",
        }

    def pop3s_account(self, user: DovecotUser) -> dict[str, str | int]:
        """Account keys for logging in as `user` over POP3S, trusting the test CA, delivering
        to webhook `main`. The config file and `AccountSpec` spell these keys the same, so the
        e2e harness (YAML) and the poller tests (specs) build on one definition."""
        return {
            "name": f"acct-{user.name}",
            "host": self.host,
            "port": self.pop3s_port,
            "tls": "implicit",
            "username": user.name,
            "password": user.password,
            "ca_file": str(self.ca_file),
            "webhook": "main",
        }

    def deliver(self, user: DovecotUser | str, raw: bytes) -> Path:
        """Drop one message into the user's Maildir/new (written to tmp/, then renamed)."""
        u = self._resolve(user)
        with self._lock:
            self._counter += 1
            n = self._counter
        unique = f"{time.time_ns()}.P{os.getpid()}Q{n}.pop3bridge-test"
        tmp = u.maildir / "tmp" / unique
        final = u.maildir / "new" / unique
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chown(tmp, self._mail_uid, self._mail_gid)
        tmp.chmod(0o600)
        os.rename(tmp, final)
        return final

    def deliver_many(self, user: DovecotUser | str, messages: list[bytes]) -> list[Path]:
        """Deliver in order; Dovecot numbers them in this order (file names sort by time)."""
        return [self.deliver(user, raw) for raw in messages]

    def message_count(self, user: DovecotUser | str) -> int:
        """Messages on disk in new/ and cur/, not counting ones flagged deleted (T)."""
        u = self._resolve(user)
        count = 0
        for sub in ("new", "cur"):
            for entry in os.scandir(u.maildir / sub):
                _, _, info = entry.name.partition(":2,")
                if entry.is_file() and "T" not in info:
                    count += 1
        return count

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """Start the master and wait until both listeners answer with a greeting."""
        if self._running:
            return
        # Foreground mode keeps the master our child: no daemonising, no orphan to hunt down,
        # and `wait()` reaps it.
        self._startup_log = open(self.root / "startup.err", "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [_dovecot_exe(), "-F", "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._startup_log,
            stderr=self._startup_log,
            preexec_fn=_die_with_parent,
        )
        self._running = True
        deadline = time.monotonic() + _START_TIMEOUT
        for port in (self.pop3_port, self.pop3s_port):
            while not self._port_open(port):
                if self._proc.poll() is not None:
                    self._running = False
                    self._startup_log.close()
                    raise DovecotError(
                        f"dovecot exited with status {self._proc.returncode} while starting: "
                        f"{(self.root / 'startup.err').read_text(errors='replace').strip()}\n"
                        f"log:\n{self.log_text()[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    self.stop()
                    raise DovecotError(
                        f"dovecot did not listen on 127.0.0.1:{port} within {_START_TIMEOUT}s;"
                        f" log:\n{self.log_text()[-2000:]}"
                    )
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop the master and wait until it and its children are gone."""
        if not self._running:
            return
        self._running = False
        proc = self._proc
        assert proc is not None and self._startup_log is not None
        proc.terminate()
        try:
            proc.wait(_GRACE)
        except subprocess.TimeoutExpired:
            # The master waits for every child; a login process stuck on an internal socket
            # (e.g. the stats handshake, 5 s) would hold the whole shutdown up, so cut them.
            for pid in _children_of(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Orphaned children notice the master's death through a pipe and exit; wait for them
        # so ports are free for a restart and nothing outlives the test session.
        deadline = time.monotonic() + _STOP_TIMEOUT
        for pid in _instance_processes(self.instance_name, self.config_file):
            while _alive(pid):
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.02)
        self._startup_log.close()

    def close(self) -> None:
        """Stop and delete the temporary directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def validate_config(self) -> str:
        """`dovecot -n` output for the generated config (raises with Dovecot's complaint)."""
        proc = subprocess.run(
            [_dovecot_exe(), "-n", "-c", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise DovecotError(f"generated dovecot.conf is invalid: {proc.stderr.strip()}")
        return proc.stdout

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------
    def _resolve(self, user: DovecotUser | str) -> DovecotUser:
        name = user if isinstance(user, str) else user.name
        try:
            return self._users[name]
        except KeyError:
            raise KeyError(f"no such Dovecot test user {name!r}; create it with add_user") from None

    def _write_passwd(self, user: DovecotUser) -> None:
        # One file per user: Dovecot re-checks a passwd-file at most once per second, so a user
        # appended to a shared file could stay invisible for up to a second. A file Dovecot has
        # never opened is read on first lookup.
        ids = f"{self._mail_uid}:{self._mail_gid}"
        line = f"{user.name}:{{PLAIN}}{user.password}:{ids}::{user.home}::\n"
        path = self.passwd_dir / user.name
        tmp = self.passwd_dir / f".{user.name}.tmp"
        tmp.write_text(line)
        # Readable by the auth process (runs as the internal user, not root).
        tmp.chmod(0o644)
        os.replace(tmp, path)

    def _port_open(self, port: int) -> bool:
        """True once the port accepts; for the plain port, once a full greeting arrives (the
        login process is then wired up, so an immediate stop() does not catch it half-born)."""
        try:
            with socket.create_connection((self.host, port), timeout=2) as s:
                if port != self.pop3_port:
                    return True
                return s.recv(512).startswith(b"+OK")
        except OSError:
            return False

    def _lmtp_config(self) -> str:
        if self.lmtp_port is None:
            return ""
        return f"""
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
protocol lmtp {{
  auth_username_format = %Ln
}}
"""

    def _config(self) -> str:
        c = self._certs
        protocols = "pop3 lmtp" if self.lmtp_port is not None else "pop3"
        return f"""\
# Generated by tests/support/dovecot.py for one test session. Do not edit.
protocols = {protocols}
listen = 127.0.0.1
base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = {self.instance_name}
log_path = {self.log_file}
info_log_path = {self.log_file}
debug_log_path = {self.log_file}
default_internal_user = {self._internal_user}
default_internal_group = {_group_name(pwd.getpwnam(self._internal_user).pw_gid)}
default_login_user = {self._login_user}
first_valid_uid = {min(self._mail_uid, 500)}
first_valid_gid = {min(self._mail_gid, 500)}
mail_location = maildir:~/Maildir
mail_fsync = never
auth_mechanisms = plain login cram-md5 apop
disable_plaintext_auth = no
auth_verbose = yes
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.passwd_dir}/%u
}}
userdb {{
  driver = passwd-file
  args = {self.passwd_dir}/%u
}}
ssl = yes
ssl_cert = <{c.cert_file}
ssl_key = <{c.key_file}
pop3_uidl_format = %08Xu%08Xv
pop3_lock_session = {"yes" if self.lock_sessions else "no"}
# Wrong-password tests must not slow down every later login from 127.0.0.1 (anvil's per-IP
# auth penalty doubles up to 15 s); closing the socket turns penalty tracking off.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
{self._lmtp_config()}"""


# Appended to the generated config (Dovecot merges a service block given twice).
ONE_LOGIN_PROCESS = """
service pop3-login {
  service_count = 0
  process_min_avail = 1
  process_limit = 1
}
"""


class OneLoginProcessDovecot(DovecotServer):
    """A Dovecot whose one pop3-login process serves every connection (Dovecot's
    high-performance login mode, `service_count = 0`, limited to one process).

    TLS session resumption needs it: Dovecot 2.3 keeps no session cache or ticket key across
    processes (each login process's OpenSSL context makes its own), so with the default
    `service_count = 1` (a new login process per connection, `DovecotServer`) no session is
    ever resumed; here every connection after the first can be."""

    def _config(self) -> str:
        return super()._config() + ONE_LOGIN_PROCESS


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the master if pytest dies without running fixture teardown."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _instance_processes(instance: str, config: Path) -> list[int]:
    """Live processes of one private instance: the master (by its -c argument) and children
    (by the instance name in their process title)."""
    found: list[int] = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            text = " ".join(p.info["cmdline"] or [])
            if instance in text or str(config) in text:
                found.append(p.pid)
    return found


def _children_of(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@contextlib.contextmanager
def running(server: DovecotServer, what: str) -> Iterator[DovecotServer]:
    """`server` started for a fixture and closed after it; a start that fails is reported as
    the missing service (`require_service`: a skip locally, a failure in CI)."""
    ok, why = dovecot_available()
    require_service("dovecot", ok, why)
    try:
        server.start()
    except Exception as exc:
        server.close()
        require_service("dovecot", False, f"{what} failed to start: {exc}")
    try:
        yield server
    finally:
        server.close()
