"""Worker processes that parse untrusted mail within a CPU-time and memory limit per message.

Mail is untrusted, and parts of the stdlib parser are quadratic (bridge/mail/_limits.py), so
the event loop, which answers /healthz, serves every other account and relays the proxy's
sessions, never parses it: every parse the bridge makes of a message goes through a `Job`
handed to `ParsePool.run`. A job is a picklable object with two methods:

- `run()`: the full parse (a webhook body, or a row's payload data with its attachments'
  contents), done in a worker within `ParseLimits.cpu_seconds` of CPU;
- `fallback(reason, bare)`: the stand-in when the parse may not finish. `bare=False` reads the
  header block only (run in the worker, within the same CPU budget); `bare=True` reads nothing
  of the message (`mail.minimal`), and is what the main process builds for a message that
  killed its worker, so it never parses that message itself.

The pool knows nothing about bodies or rows; `bridge.outbox.deferred` and `bridge.outbox.rows`
define the two jobs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    # Imported where it is used otherwise: the workers' forkserver preloads this module
    # (FORKSERVER_PRELOAD) and parses nothing with asyncio (12 ms of each pool start).
    import asyncio

__all__ = ["Job", "ParseLimits", "ParsePool", "current_pool", "run_jobs"]

log = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Job(Protocol[T_co]):
    """One message's parse (module docstring); must pickle, to reach a worker process."""

    def run(self) -> T_co: ...

    def fallback(self, reason: str, bare: bool) -> T_co: ...


class ParseLimits(NamedTuple):
    """What one message may cost a parse worker: CPU seconds and address space in bytes."""

    cpu_seconds: float = 30.0
    memory: int = 2 << 30


class _OutOfTime(BaseException):
    """Raised in a worker by SIGPROF when a message has used up its CPU time (a
    BaseException, so no `except Exception` inside the parser can swallow it)."""


def _on_sigprof(signum: int, frame: object) -> None:
    raise _OutOfTime


def _init_worker(memory: int, owner: int) -> None:
    """Runs once in each worker process: the memory cap, the CPU-time alarm's handler, and a
    watch on `owner` (the bridge's pid): a worker whose bridge was SIGKILLed would otherwise
    wait on its queue for ever, holding its memory."""
    import resource
    import signal

    threading.Thread(target=_exit_with, args=(owner,), name="owner-watch", daemon=True).start()

    if memory > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.signal(signal.SIGPROF, _on_sigprof)


def _exit_with(owner: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(0)
        except OSError:  # alive, but not ours to signal: keep watching
            pass


@contextlib.contextmanager
def _cpu_budget(seconds: float) -> Iterator[None]:
    """`_OutOfTime` once this process has spent `seconds` of CPU inside the block.

    SIGPROF is handled between bytecodes, so a long call into C code would delay it: the
    RLIMIT_CPU soft limit is the backstop (SIGXCPU ends the worker, and the pool treats the
    message like one that killed its worker).
    """
    import resource
    import signal

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    backstop = int(usage.ru_utime + usage.ru_stime + 2 * seconds + 5)
    if hard != resource.RLIM_INFINITY:
        backstop = min(backstop, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (backstop, hard))
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _isolated(job: Job[T], cpu_seconds: float) -> T:
    """One job in a worker: the full parse within the CPU budget, else its fallback."""
    try:
        with _cpu_budget(cpu_seconds):
            return job.run()
    except (_OutOfTime, MemoryError) as exc:
        reason = (
            f"parsing the message took more than poller.parse_timeout ({cpu_seconds:g}s of CPU)"
            if isinstance(exc, _OutOfTime)
            else "parsing the message needed more memory than a parse worker may use"
        )
    try:
        with _cpu_budget(cpu_seconds):
            return job.fallback(reason, False)
    except (_OutOfTime, MemoryError):
        return job.fallback(reason, True)


def run_jobs(jobs: Sequence[Job[Any]], cpu_seconds: float = 0.0) -> list[Any]:
    """Each job's result: what a parse worker process runs. With `cpu_seconds`, each job gets
    that much CPU time (`_isolated`)."""
    if cpu_seconds <= 0:
        return [job.run() for job in jobs]
    return [_isolated(job, cpu_seconds) for job in jobs]


class _PoolFailed(Exception):
    """A batch got no answer from the workers: one died, or none answered in time."""


_Pending = tuple[Job[Any], "asyncio.Future[Any]"]
_current: ParsePool | None = None


def current_pool() -> ParsePool | None:
    """The open `ParsePool` of this process, if any: the poller's fetch and the proxy's tap
    use it for the rows they build at once (big messages, attachment links)."""
    return _current


# What the forkserver imports once, so that each worker forked from it starts ready to parse.
FORKSERVER_PRELOAD = ("bridge.outbox",)


class ParsePool:
    """Worker processes (`poller.parse_workers`) that run parse `Job`s (module docstring).

    A worker gives each job `limits.cpu_seconds` of CPU (`poller.parse_timeout`; SIGPROF,
    with RLIMIT_CPU as the backstop) in an address space capped at `limits.memory`. A message
    over either gets its job's `fallback(reason, bare=False)`: headers only, raw message
    attached, the reason in `parse_errors`.

    If a batch kills its worker (or none answers within a generous wall-clock deadline, when
    the workers are killed), the pool is restarted and the batch's jobs are retried one by
    one: the one that kills a worker alone gets `fallback(reason, bare=True)`, built here
    without reading the message, the others their full parse. Each message is thus parsed at
    most twice, never in a loop, and the main process never runs the parser on it.

    Jobs that arrive while a batch is with the workers are sent together as the next batch:
    a process round trip carries about ten messages (the main process's share of a message
    falls from ~0.45 to ~0.22 ms, BENCHMARKS.md), each raw message is pickled once and only
    the result comes back.

    The workers start on demand: at the first `run`, or earlier at `warm()`, which the
    poller calls once a mailbox's UIDL listing shows new mail, so their start overlaps the
    RETRs. A run with nothing to parse (cron's usual `once`) starts no process at all: the
    forkserver, its resource tracker and a worker cost 0.25-0.35 s of CPU, more than the
    rest of an empty `once` besides the interpreter (docs/security.md).
    """

    def __init__(self, workers: int, limits: ParseLimits | None = None) -> None:
        global _current
        self.workers = max(1, workers)
        self.limits = limits or ParseLimits()
        self.restarts = 0
        self._closed = False
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._ready: concurrent.futures.Future[None] | None = None
        self._queued: list[_Pending] = []
        self._running: asyncio.Task[None] | None = None
        _current = self

    @property
    def started(self) -> bool:
        """Whether the worker processes have been launched (`warm`, or a first `run`)."""
        return self._executor is not None

    def warm(self) -> None:
        """Launch the workers now (from a thread; this returns at once) if they are not up:
        for a caller that knows messages to parse are coming, so the start overlaps its I/O."""
        if self._executor is None and not self._closed:
            self._executor = self._start()
            log.info("webhook bodies are parsed in %d worker process(es)", self.workers)

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        import multiprocessing  # only here: commands that parse nothing never pay for it

        # Never "fork": it would copy this process's memory, secrets included, into the one
        # that parses hostile mail, and fork a process that has threads. One worker (the
        # default) is spawned: a fresh interpreter that imports the parser itself, 30-70 ms
        # of CPU cheaper than a forkserver (its own interpreter) forking it, and no slower to
        # answer. Several share a forkserver, which imports the parser once for all of them.
        if self.workers == 1:
            context: Any = multiprocessing.get_context("spawn")
        else:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        executor = concurrent.futures.ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.limits.memory, os.getpid()),
        )
        # Start the workers from a thread: starting a forkserver takes a few hundred
        # milliseconds (seconds on a busy machine), and the executor holds a lock meanwhile
        # that a `submit` from the event loop would wait on. `_send` therefore waits for
        # `_ready` first.
        self._ready = concurrent.futures.Future()
        threading.Thread(
            target=_warm_up, args=(executor, self._ready), name="parse-pool-start", daemon=True
        ).start()
        return executor

    def allowance(self, jobs: int) -> float:
        """Wall-clock seconds within which `jobs` jobs sent together are answered (or their
        worker is killed and they fall back). CPU time is enforced in the worker; this only
        catches a worker that stopped answering at all, so it allows for a machine busy with
        other work. A caller with a deadline of its own can set this much aside."""
        return jobs * (3 * self.limits.cpu_seconds + 5) + 30

    async def run(self, job: Job[T]) -> T:
        """`job.run()` done in a worker, or its fallback (class docstring)."""
        import asyncio

        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self._closed:
            done.cancel()  # shutting down: the row is built again after the restart
        else:
            self.warm()
            self._queued.append((job, done))
            if self._running is None:
                self._running = asyncio.ensure_future(self._run())
        return await done

    async def _run(self) -> None:
        import asyncio

        try:
            while self._queued:
                # One share per worker, so every worker has a part of what is waiting.
                batch, self._queued = self._queued, []
                step = -(-len(batch) // self.workers)
                shares = [batch[at : at + step] for at in range(0, len(batch), step)]
                await asyncio.gather(*(self._batch(share) for share in shares))
        finally:
            self._running = None

    async def _batch(self, batch: list[_Pending]) -> None:
        try:
            results = await self._send([job for job, _ in batch])
        except _PoolFailed:
            # One by one, so the message that kills a worker is found and the rest are built.
            for job, done in batch:
                if done.done():
                    continue
                try:
                    [result] = await self._send([job])
                except _PoolFailed as exc:
                    log.error(
                        "a message could not be parsed (%s); delivered with its raw content "
                        "and no parsed fields",
                        exc,
                        extra=_about(job),
                    )
                    try:
                        result = job.fallback(str(exc), True)
                    except Exception as error:  # no raw message: the worker marks the row
                        done.set_exception(error)
                        continue
                if not done.done():
                    done.set_result(result)
            return
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)

    async def _send(self, jobs: list[Job[Any]]) -> list[Any]:
        """One round trip; `_PoolFailed` (after restarting the pool) when it cannot answer."""
        import asyncio

        self.warm()
        executor, ready = self._executor, self._ready
        assert executor is not None and ready is not None  # warm() set them
        cpu = self.limits.cpu_seconds
        deadline = self.allowance(len(jobs))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(deadline):
                await asyncio.wrap_future(ready)
                return await loop.run_in_executor(executor, run_jobs, jobs, cpu)
        except TimeoutError:
            _kill_workers(executor)
            self._restart(executor)
            raise _PoolFailed(
                f"the parse worker did not answer within {deadline:g}s and was killed"
            ) from None
        except concurrent.futures.BrokenExecutor:
            self._restart(executor)
            raise _PoolFailed("the parse worker process died while parsing it") from None
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a bug in the worker: the message still goes out
            raise _PoolFailed(f"parsing failed ({type(exc).__name__}: {exc})") from None

    def _restart(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        if broken is not self._executor or self._closed:
            return  # another batch restarted it already
        self.restarts += 1
        log.warning("a parse worker process died or hung; starting new ones")
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor = self._start()

    def close(self) -> None:
        """Stop the workers; bodies not yet built are built again from the store next time."""
        global _current
        self._closed = True
        if _current is self:
            _current = None
        for _, done in self._queued:
            if not done.done():
                done.cancel()
        self._queued = []
        # A worker deep in a slow message would hold the exit for up to its CPU limit (the
        # interpreter joins the pool at exit); what it was building is built again later.
        # Wait for a start in progress first: a worker launched after this would be missed,
        # and it would outlive us holding our stdout and stderr.
        if self._executor is None or self._ready is None:
            return  # never started: nothing to stop
        with contextlib.suppress(Exception):
            self._ready.result(timeout=30)
        processes = _processes(self._executor)
        self._executor.shutdown(wait=False, cancel_futures=True)
        _kill(processes)


def _about(job: Job[Any]) -> dict[str, Any]:
    """Log fields naming the message a job is about, when it says (`about()`)."""
    about = getattr(job, "about", None)
    return dict(about()) if callable(about) else {}


def _warm_up(
    executor: concurrent.futures.ProcessPoolExecutor, ready: concurrent.futures.Future[None]
) -> None:
    try:
        # `submit` returns once the worker processes are launched.
        future = executor.submit(run_jobs, [], 0.0)
        future.add_done_callback(_ignore_result)
    except Exception:  # noqa: S110 - a failed start shows up on the first batch
        pass
    finally:
        ready.set_result(None)


def _processes(executor: concurrent.futures.ProcessPoolExecutor) -> list[Any]:
    # The executor has no public way to stop a running call; its processes are reachable
    # (until `shutdown` forgets them).
    return list((getattr(executor, "_processes", None) or {}).values())


def _kill(processes: list[Any]) -> None:
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()


def _kill_workers(executor: concurrent.futures.ProcessPoolExecutor) -> None:
    _kill(_processes(executor))


def _ignore_result(future: concurrent.futures.Future[list[Any]]) -> None:
    future.exception()  # a failed warm-up shows up, once, on the first real batch
