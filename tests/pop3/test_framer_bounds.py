"""Every bound of the framers, reached: stray LFs, status-line and command-line limits.

The properties live in `framer_props` so that bench/fuzz_framers.py runs the same ones for hours.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pop3.commands import ResponseKind
from bridge.pop3.wire import DEFAULT_MAX_STATUS_LINE, MAX_STRAY_LF

from . import framer_props as props

BUDGET = settings(max_examples=150, deadline=None)


def test_a_flood_of_stray_lfs_is_a_protocol_error_not_a_recursion_error() -> None:
    # Was RecursionError: `_take_line` called itself once per stray LF.
    props.check_stray_lf_bound(5000, [])
    props.check_stray_lf_bound(100_000, [9, 50_000])


@BUDGET
@given(st.integers(0, 3 * MAX_STRAY_LF), props.cuts)
def test_stray_lf_bound(strays: int, points: list[int]) -> None:
    props.check_stray_lf_bound(strays, points)


def test_stray_lfs_fed_one_at_a_time_still_count_toward_one_bound() -> None:
    props.check_stray_lf_bound(MAX_STRAY_LF, list(range(8, 8 + MAX_STRAY_LF)))
    props.check_stray_lf_bound(MAX_STRAY_LF + 1, list(range(8, 9 + MAX_STRAY_LF)))


@BUDGET
@given(
    st.sampled_from(props.BOUND_COUNTS) | st.integers(6, 3 * DEFAULT_MAX_STATUS_LINE), props.cuts
)
def test_status_line_bound(length: int, points: list[int]) -> None:
    props.check_status_line_bound(length, points)


@BUDGET
@given(st.sampled_from(props.BOUND_COUNTS) | st.integers(7, 1000), props.cuts)
def test_command_line_bound(length: int, points: list[int]) -> None:
    props.check_command_line_bound(max(length, 7), points, auth=False)


@BUDGET
@given(st.sampled_from(props.BOUND_COUNTS) | st.integers(3, 70_000), props.cuts)
def test_sasl_answer_line_bound(length: int, points: list[int]) -> None:
    props.check_command_line_bound(max(length, 3), points, auth=True)


@BUDGET
@given(props.bounded_bytes, props.kinds, props.cuts)
def test_framer_only_raises_typed_errors_at_every_size(
    data: bytes, kinds: list[ResponseKind], points: list[int]
) -> None:
    props.check_framer_only_raises_typed_errors(b"+OK hi\r\n" + data, kinds, points)
    props.check_framer_only_raises_typed_errors(data, kinds, points)


@BUDGET
@given(props.bounded_bytes, props.cuts, st.sampled_from([8, 255, 64 * 1024]))
def test_reader_only_raises_typed_errors_at_every_size(
    data: bytes, points: list[int], max_line: int
) -> None:
    props.check_reader_only_raises_typed_errors(data, points, max_line)
