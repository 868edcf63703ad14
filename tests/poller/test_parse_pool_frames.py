"""The parse workers' answer pipe: an answer arrives in reads of any size (`pool._Answers`).

The event loop hands the pool whatever one read of the pipe returned, from one byte to
256 KiB; the length header itself may be split. Whatever the split, the waiting request gets
exactly the pickle the worker wrote, and a pipe that closes mid-answer fails it as a dead
worker instead of leaving it waiting.
"""

from __future__ import annotations

import pickle

import pytest

from bridge.outbox._worker import HEADER
from bridge.outbox.pool import _Answers, _WorkerDied

ANSWER = pickle.dumps((True, [b"x" * 9000, b'{"a":1}', b""]), pickle.HIGHEST_PROTOCOL)
FRAME = HEADER.pack(len(ANSWER)) + ANSWER


@pytest.mark.parametrize("step", [1, 3, 4, 5, 4096, len(FRAME) - 1, len(FRAME)])
async def test_an_answer_in_reads_of_any_size_is_the_worker_s_pickle(step: int) -> None:
    answers = _Answers()
    for _ in range(2):  # and the next answer on the same pipe as well
        waiter = answers.expect()
        for at in range(0, len(FRAME), step):
            assert not waiter.done()
            answers.data_received(FRAME[at : at + step])
        assert pickle.loads(await waiter) == (True, [b"x" * 9000, b'{"a":1}', b""])


async def test_a_pipe_closed_mid_answer_is_a_dead_worker() -> None:
    answers = _Answers()
    waiter = answers.expect()
    answers.data_received(FRAME[:100])
    answers.eof_received()
    with pytest.raises(_WorkerDied):
        await waiter
    with pytest.raises(_WorkerDied):  # and every later request at once
        await answers.expect()
