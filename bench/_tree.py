"""Run a command and report the CPU of its whole process tree, parse workers included.

    python bench/_tree.py REPORT.json -- COMMAND ...

`getrusage(RUSAGE_CHILDREN)` in the benchmark counts only descendants that somebody waited
for. The bridge's parse workers are forked by a multiprocessing forkserver that the bridge
never waits for, and they outlive it for a moment (they exit when they see it gone), so
their CPU was missing from "CPU per message". This wrapper makes itself a child subreaper
(prctl PR_SET_CHILD_SUBREAPER): every orphan of the tree is re-parented to it, it waits for
all of them, and its own RUSAGE_CHILDREN is then the whole tree's CPU. It writes a JSON
report: `seconds` from spawning the command to the command's exit (the workers' wind-down
after that is not in the wall time, as for a user running it), `returncode`, `cpu_s`
(user + system of every descendant) and `exited_at` (time.time() when the command exited).

SIGTERM and SIGINT are passed on to the command, so a daemon (`pop3bridge run`) can be
stopped through the wrapper. The wrapper itself starts with `-S -I` and imports only what it
needs; its own CPU is not in `cpu_s`.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    report, command = argv[0], argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: proc.send_signal(s))
    returncode = proc.wait()
    seconds = time.perf_counter() - start
    exited_at = time.time()
    while True:  # every orphan of the tree (forkserver, parse workers) is ours now
        try:
            os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(report, "w") as f:
        json.dump(
            {
                "seconds": seconds,
                "returncode": returncode,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "exited_at": exited_at,
            },
            f,
        )
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
