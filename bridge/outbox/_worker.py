"""A parse worker process's main loop: batches of jobs in on stdin, their results out on stdout.

`ParsePool` starts each worker as a fresh interpreter (`python -S -P -c BOOT`, never a fork
of the running bridge, whose memory holds secrets; `once` forks its one worker before reading
any configuration, `bridge.outbox._early`) with two pipes, and speaks frames over them: a
4-byte big-endian length, then a pickle. The bridge sends `(jobs, cpu_seconds)`; the worker
answers `(True, results)` (`run_jobs`: each job within its CPU time, else its fallback) or
`(False, "Type: message")` for a batch that raised (a bug: the bridge retries the jobs one by
one and falls back for the one that fails alone).

This replaced `concurrent.futures.ProcessPoolExecutor` (BENCHMARKS.md §1): the executor's
call queue needs a multiprocessing lock, hence a resource-tracker process (~40 ms of CPU per
run), and every batch crossed two of its threads in the bridge before and after the pipe;
here the bridge's event loop writes and reads the pipes itself.

End of input is the signal to exit: the bridge closed the pipe, or died (SIGKILL included),
since only the bridge holds its write end. The worker keeps no thread of its own.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from typing import Any

from bridge.outbox.pool import init_worker, run_jobs

__all__ = ["BOOT", "HEADER", "main", "worker_path"]

# The worker's entry, run with `-S -P -c`: argv[1] is the address-space cap in bytes, the rest
# its sys.path (`worker_path`). No `site` (its .pth files, an editable install's import hook:
# 5-10 ms of each start) and no working directory on the path.
BOOT = (
    "import sys; sys.path[:] = sys.argv[2:]; "
    "from bridge.outbox._worker import main; main(int(sys.argv[1]))"
)

HEADER = struct.Struct(">I")


def worker_path() -> list[str]:
    """A worker's sys.path: the bridge's own, in its order (so a module resolves as it does in
    the bridge), and the directory holding this `bridge` package at the end when the bridge
    found it through an import hook instead (an editable install's, set up by `site`)."""
    import bridge

    package = os.path.dirname(os.path.abspath(next(iter(bridge.__path__))))
    path = list(sys.path)
    if package not in {os.path.abspath(entry) for entry in path}:
        path.append(package)
    return path


def main(memory: int) -> None:
    """Serve batches until the bridge closes the pipe (module docstring)."""
    # Ctrl-C reaches the whole process group; the bridge decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Frames travel on private copies of fds 0 and 1; fd 1 then points at stderr, so nothing
    # the parser or a library prints can corrupt a frame.
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    init_worker(memory)
    while True:
        head = requests.read(HEADER.size)
        if len(head) < HEADER.size:
            return  # the bridge is gone or closed the pipe
        (size,) = HEADER.unpack(head)
        frame = requests.read(size)
        if len(frame) < size:
            return
        answer: tuple[bool, Any]
        try:
            jobs, cpu_seconds = pickle.loads(frame)  # noqa: S301 - from the bridge that started us
            del frame
            answer = (True, run_jobs(jobs, cpu_seconds))
            out = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a bug in a job: the bridge retries the batch job by job
            out = pickle.dumps((False, f"{type(exc).__name__}: {exc}"), pickle.HIGHEST_PROTOCOL)
        try:
            answers.write(HEADER.pack(len(out)))
            answers.write(out)
            answers.flush()
        except BrokenPipeError:
            return


if __name__ == "__main__":  # pragma: no cover - started through BOOT
    main(int(sys.argv[1]))
