"""Peak resident memory of another process while a test drives it (the proxy's memory bounds)."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import psutil

__all__ = ["RssPeak"]


class RssPeak:
    """`with RssPeak(pid) as rss: ...` samples the process's RSS every `interval` seconds;
    afterwards `rss.baseline` is the RSS on entry and `rss.growth` the peak above it.

    Sampling (not VmHWM) because the process's earlier peak, before the measured step, must
    not count.
    """

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.baseline = self.peak = 0

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __enter__(self) -> RssPeak:
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
