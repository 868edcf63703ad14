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

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast

if TYPE_CHECKING:
    # Imported where it is used otherwise: the parse workers import this module and parse
    # nothing with asyncio (12 ms of each worker's start).
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


def init_worker(memory: int) -> None:
    """Runs once in each worker process (`bridge.outbox._worker`): the memory cap and the
    CPU-time alarm's handler. A worker whose bridge died sees the end of its input and exits."""
    import resource
    import signal

    if memory > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.signal(signal.SIGPROF, _on_sigprof)


@contextlib.contextmanager
def _cpu_budget(seconds: float, hard: int) -> Iterator[None]:
    """`_OutOfTime` once this process has spent `seconds` of CPU inside the block.

    SIGPROF is handled between bytecodes, so a long call into C code would delay it: the
    RLIMIT_CPU soft limit (under `hard`) is the backstop (SIGXCPU ends the worker, and the
    pool treats the message like one that killed its worker). It is moved for each message
    and put back once per batch (`run_jobs`): four system calls per message, not six.
    """
    import resource
    import signal

    backstop = int(time.process_time() + 2 * seconds + 5)
    if hard != resource.RLIM_INFINITY:
        backstop = min(backstop, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (backstop, hard))
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def _isolated(job: Job[T], cpu_seconds: float, hard: int) -> T:
    """One job in a worker: the full parse within the CPU budget, else its fallback."""
    try:
        with _cpu_budget(cpu_seconds, hard):
            return job.run()
    except (_OutOfTime, MemoryError) as exc:
        reason = (
            f"parsing the message took more than poller.parse_timeout ({cpu_seconds:g}s of CPU)"
            if isinstance(exc, _OutOfTime)
            else "parsing the message needed more memory than a parse worker may use"
        )
    try:
        with _cpu_budget(cpu_seconds, hard):
            return job.fallback(reason, False)
    except (_OutOfTime, MemoryError):
        return job.fallback(reason, True)


def run_jobs(jobs: Sequence[Job[Any]], cpu_seconds: float = 0.0) -> list[Any]:
    """Each job's result: what a parse worker process runs. With `cpu_seconds`, each job gets
    that much CPU time (`_isolated`)."""
    if cpu_seconds <= 0:
        return [job.run() for job in jobs]
    import resource

    limits = resource.getrlimit(resource.RLIMIT_CPU)
    try:
        return [_isolated(job, cpu_seconds, limits[1]) for job in jobs]
    finally:
        resource.setrlimit(resource.RLIMIT_CPU, limits)


class _PoolFailed(Exception):
    """A batch got no answer from the workers: one died, or none answered in time."""


_Pending = tuple[Job[Any], "asyncio.Future[Any]"]
_current: ParsePool | None = None


def current_pool() -> ParsePool | None:
    """The open `ParsePool` of this process, if any: the poller's fetch and the proxy's tap
    use it for the rows they build at once (big messages, attachment links)."""
    return _current


class ParsePool:
    """Worker processes (`poller.parse_workers`) that run parse `Job`s (module docstring).

    A worker gives each job `limits.cpu_seconds` of CPU (`poller.parse_timeout`; SIGPROF,
    with RLIMIT_CPU as the backstop) in an address space capped at `limits.memory`. A message
    over either gets its job's `fallback(reason, bare=False)`: headers only, raw message
    attached, the reason in `parse_errors`.

    If a batch kills its worker (or it does not answer within a generous wall-clock deadline,
    when it is killed), that worker is replaced and the batch's jobs are retried one by one:
    the one that kills a worker alone gets `fallback(reason, bare=True)`, built here without
    reading the message, the others their full parse. Each message is thus parsed at most
    twice, never in a loop, and the main process never runs the parser on it.

    Jobs that arrive while a batch is with the workers are sent together as the next batch:
    a process round trip carries many messages, each raw message is pickled once and only
    the result comes back. Each worker is a fresh interpreter (`bridge.outbox._worker`, never
    a fork of the running bridge; the one exception is `once`'s worker, forked before any
    configuration is read, `bridge.outbox._early`) on two pipes that the event loop reads and
    writes itself.

    The workers start on demand: at the first `run`, or earlier at `warm()`, which the
    poller calls once a mailbox's UIDL listing shows new mail, so their start overlaps the
    RETRs. A run with nothing to parse (cron's usual `once`) starts no process at all: a
    worker's start costs 0.1-0.15 s of CPU, about as much as the rest of an empty `once`
    besides the interpreter (docs/security.md).
    """

    def __init__(self, workers: int, limits: ParseLimits | None = None) -> None:
        global _current
        self.workers = max(1, workers)
        self.limits = limits or ParseLimits()
        self.restarts = 0
        self._closed = False
        self._procs: list[_Worker | None] | None = None
        self._queued: list[_Pending] = []
        self._answered = False  # a first batch went and came back (`_run`)
        self._running: asyncio.Task[None] | None = None
        _current = self

    @property
    def started(self) -> bool:
        """Whether the worker processes have been launched (`warm`, or a first `run`)."""
        return self._procs is not None

    def pids(self) -> list[int]:
        """The worker processes' ids (none before the start or after `close`)."""
        return [worker.process.pid for worker in self._procs or () if worker is not None]

    def warm(self) -> None:
        """Launch the workers now if they are not up (this returns once they are spawned,
        a few milliseconds; their imports run on their own): for a caller that knows
        messages to parse are coming, so the start overlaps its I/O."""
        if self._procs is None and not self._closed:
            from bridge.outbox._early import discard_forked, take_forked

            # The worker `once` forked at start-up (bridge/outbox/_early.py), for one worker.
            early = take_forked(self.limits.memory) if self.workers == 1 else None
            discard_forked()
            self._procs = [_Worker(self.limits.memory, early) for _ in range(self.workers)]
            log.info("webhook bodies are parsed in %d worker process(es)", self.workers)

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
                # One share per worker, so every worker has a part of what is waiting. The
                # pool's first batch is one job per worker: a delivery claim queues all its
                # bodies at once, and the first POST would wait for all of them (20 bench
                # messages: ~25 ms at load 4) when it needs one; the rest go together once
                # that one is back, and are parsed while its body is posted.
                take = len(self._queued) if self._answered else self.workers
                batch, self._queued = self._queued[:take], self._queued[take:]
                step = -(-len(batch) // self.workers)
                shares = [batch[at : at + step] for at in range(0, len(batch), step)]
                await asyncio.gather(*(self._batch(n, share) for n, share in enumerate(shares)))
                self._answered = True
        finally:
            self._running = None

    async def _batch(self, slot: int, batch: list[_Pending]) -> None:
        try:
            results = await self._send(slot, [job for job, _ in batch])
        except _PoolFailed:
            # One by one, so the message that kills a worker is found and the rest are built.
            for job, done in batch:
                if done.done():
                    continue
                try:
                    [result] = await self._send(slot, [job])
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

    async def _send(self, slot: int, jobs: list[Job[Any]]) -> list[Any]:
        """One round trip with worker `slot`; `_PoolFailed` (after replacing that worker)
        when it cannot answer."""
        import asyncio

        self.warm()
        if self._procs is None:
            raise _PoolFailed("the parse workers are shut down")
        worker = self._procs[slot]
        if worker is None:  # replaced after a cancelled request
            worker = self._procs[slot] = _Worker(self.limits.memory)
        deadline = self.allowance(len(jobs))
        try:
            async with asyncio.timeout(deadline):
                ok, answer = await worker.call(jobs, self.limits.cpu_seconds)
        except TimeoutError:
            self._replace(worker)
            raise _PoolFailed(
                f"the parse worker did not answer within {deadline:g}s and was killed"
            ) from None
        except _WorkerDied:
            self._replace(worker)
            raise _PoolFailed("the parse worker process died while parsing it") from None
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            # The answer to this request would be read as the next one's: start afresh.
            self._replace(worker, count=False)
            raise
        except BaseException as exc:  # the batch could not be sent (a job that won't pickle)
            self._replace(worker, count=False)
            raise _PoolFailed(f"parsing failed ({type(exc).__name__}: {exc})") from None
        if not ok:  # a bug in the worker: the message still goes out
            raise _PoolFailed(f"parsing failed ({answer})")
        results: list[Any] = answer
        return results

    def _replace(self, broken: _Worker, count: bool = True) -> None:
        """Kill `broken`; after a failure (`count`) start its successor at once, for the
        retries that follow, else at the slot's next request."""
        broken.kill()
        if self._procs is None or broken not in self._procs or self._closed:
            return
        slot = self._procs.index(broken)
        self._procs[slot] = None
        if count:
            self.restarts += 1
            log.warning("a parse worker process died or hung; starting a new one")
            self._procs[slot] = _Worker(self.limits.memory)

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
        # A worker deep in a slow message would hold the exit for up to its CPU limit; what
        # it was building is built again later, so it is killed rather than asked to stop.
        for worker in self._procs or ():
            if worker is not None:
                worker.kill()
        self._procs = None
        from bridge.outbox._early import discard_forked

        discard_forked()  # not taken: this pool never started


class _WorkerDied(Exception):
    """The worker's answer pipe closed before a whole answer arrived."""


class _Worker:
    """One worker process and the two pipes to it; `call` is one request and its answer.

    The process is started at once (a fresh interpreter); the pipes are joined to the event
    loop at the first `call`, so the pool can be warmed from any thread."""

    def __init__(self, memory: int, forked: Any = None) -> None:
        import subprocess
        import sys

        from bridge.outbox._worker import BOOT, worker_path

        self.process: Any = forked  # `bridge.outbox._early.ForkedWorker`, already running
        if forked is None:
            # The interpreter's own flags (-X, -W, -O ...), as multiprocessing passes them.
            flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
            argv = [sys.executable, *flags, "-S", "-P", "-c", BOOT, str(memory), *worker_path()]
            self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        self._reader: _Answers | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._read_transport: asyncio.ReadTransport | None = None

    async def call(self, jobs: list[Job[Any]], cpu_seconds: float) -> tuple[bool, Any]:
        import asyncio
        import pickle

        from bridge.outbox._worker import HEADER

        if self._reader is None:
            loop = asyncio.get_running_loop()
            assert self.process.stdin is not None and self.process.stdout is not None
            reader = _Answers()  # duck-typed: asyncio.Protocol is not imported in workers
            self._read_transport, _ = await loop.connect_read_pipe(
                lambda: cast("asyncio.Protocol", reader), self.process.stdout
            )
            self._reader = reader
            self._writer, _ = await loop.connect_write_pipe(
                asyncio.BaseProtocol, self.process.stdin
            )
        assert self._writer is not None
        frame = pickle.dumps((jobs, cpu_seconds), pickle.HIGHEST_PROTOCOL)
        answer = self._reader.expect()
        if self._writer.is_closing():
            raise _WorkerDied
        self._writer.write(HEADER.pack(len(frame)))
        self._writer.write(frame)  # not joined to its header: a copy less
        data = await answer
        # From a process this one started (the executor it replaced unpickled the same): a
        # worker that could forge a pickle could already run code as this user.
        result: tuple[bool, Any] = pickle.loads(data)  # noqa: S301
        return result

    def kill(self) -> None:
        for transport in (self._writer, self._read_transport):
            # RuntimeError: closed after its event loop (the pipes below are closed anyway).
            with contextlib.suppress(RuntimeError):
                if transport is not None:
                    transport.close()
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        with contextlib.suppress(OSError):
            self.process.kill()
        # Reaped now (a killed process is gone within milliseconds), else by `subprocess`
        # at a later start; never a long wait on the event loop.
        with contextlib.suppress(Exception):
            self.process.wait(0.05)


class _Answers:
    """The read side of a worker's answer pipe (an asyncio protocol): frames, one per
    request, each resolving the future `expect` handed out.

    The pipe delivers an answer (~9 KB a message) in reads of up to 256 KiB; they are kept as
    they come and joined once, and the pickle is read from a view of that one copy (a growing
    bytearray sliced into bytes copied each answer three times: ~13 us a message)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._have = 0
        self._waiter: asyncio.Future[memoryview] | None = None
        self._gone = False

    def expect(self) -> asyncio.Future[memoryview]:
        import asyncio

        self._waiter = asyncio.get_running_loop().create_future()
        if self._gone:
            self._waiter.set_exception(_WorkerDied())
        return self._waiter

    def connection_made(self, transport: object) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        from bridge.outbox._worker import HEADER

        self._chunks.append(data)
        self._have += len(data)
        if self._have < HEADER.size:
            return
        if len(self._chunks[0]) < HEADER.size:
            self._chunks = [b"".join(self._chunks)]
        (size,) = HEADER.unpack_from(self._chunks[0])
        end = HEADER.size + size
        if self._have < end:
            return
        whole = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        rest = whole[end:]  # nothing, as one request is answered at a time
        self._chunks, self._have = ([rest] if rest else []), len(rest)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(memoryview(whole)[HEADER.size : end])

    def eof_received(self) -> None:
        self.connection_lost(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(_WorkerDied())

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def _about(job: Job[Any]) -> dict[str, Any]:
    """Log fields naming the message a job is about, when it says (`about()`)."""
    about = getattr(job, "about", None)
    return dict(about()) if callable(about) else {}
