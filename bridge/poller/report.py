"""`PollReport`: what one poll of one account did, for logs, metrics and `once`'s exit code.

Its own module because the session (`poll`), its login (`login`) and its fetch (`fetch`) each
fill in a part, and the scheduler, the observer and the app read it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from bridge.poller.canary import FoundCanary

__all__ = ["PollReport"]


@dataclass(slots=True)
class PollReport:
    """What one poll did, for logs, metrics and `once`'s exit code."""

    account: str
    on_server: int = 0
    new: int = 0
    recorded: int = 0
    bytes_fetched: int = 0
    oversize: int = 0
    marked_initial: int = 0
    rekeyed: int = 0
    deleted: int = 0
    pruned: int = 0
    # Our own freshness canaries fetched (never recorded or delivered; DELE'd in this session),
    # with when each was fetched and its message number.
    canaries: list[tuple[FoundCanary, float]] = field(default_factory=list)
    canary_numbers: list[int] = field(default_factory=list)
    # Seconds the server asks between logins (CAPA LOGIN-DELAY, RFC 2449 §6.5), if it says.
    login_delay: float | None = None
    started_at: float = field(default_factory=time.time)
    duration: float = 0.0
    _session: str | None = field(default=None, repr=False)

    @property
    def session(self) -> str:
        """Names this POP3 session in the custody trail (who fetched a message, who sent its
        DELE). Drawn when first asked for: an idle poll writes no custody event, so it need
        not make the system call the random draw takes."""
        if self._session is None:
            self._session = secrets.token_hex(6)
        return self._session
