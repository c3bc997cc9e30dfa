"""Kernel: RNG streams per (purpose, device), per-device draws, and the event log's hash."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from fleet.core.kernel import EVENT_COLUMNS, DeviceDraws, EventRecorder, RngStreams


def test_streams_are_reproducible_and_independent():
    a, b = RngStreams(7), RngStreams(7)
    assert a.stream("link", 3).random() == b.stream("link", 3).random()
    assert a.stream("link", 3) is a.stream("link", 3)
    assert a.stream("link", 4).random() != RngStreams(7).stream("link", 3).random()
    assert RngStreams(8).stream("link", 3).random() != RngStreams(7).stream("link", 3).random()
    with pytest.raises(ValueError, match="unknown RNG purpose"):
        a.stream("luck")


def test_device_draws_do_not_depend_on_the_order_devices_draw_in():
    forward = RngStreams(1).device_draws("slowdown", "normal", 2000)
    backward = RngStreams(1).device_draws("slowdown", "normal", 2000)
    n = DeviceDraws.FIRST + DeviceDraws.CHUNK * 2 + 5  # crosses every boundary
    seq_fwd = {d: [forward.next(d) for _ in range(n)] for d in range(5)}
    seq_bwd = {d: [] for d in range(5)}
    for _ in range(n):  # interleaved, devices in reverse order
        for d in reversed(range(5)):
            seq_bwd[d].append(backward.next(d))
    assert seq_fwd == seq_bwd
    assert seq_fwd[0] != seq_fwd[1]


def test_device_draws_have_the_right_distribution():
    draws = RngStreams(3).device_draws("link", "uniform", 2000)
    u = np.array([draws.next(d) for d in range(2000) for _ in range(10)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01  # sd of the mean: 0.289 / sqrt(20000) = 0.002
    normal = RngStreams(3).device_draws("slowdown", "normal", 2000)
    z = np.array([normal.next(d) for d in range(2000) for _ in range(10)])
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.03


def test_event_log_hash_is_the_hash_of_the_csv_text():
    rec = EventRecorder()
    rec.record(0.0, "dispatch", 0, 1, 0, None, 0, 1024)
    rec.record(0.1 + 0.2, "update", 0, 1, 0, compute_s=1.5, staleness=0)
    buffer = io.StringIO()
    digest = rec.write_csv(buffer)
    text = buffer.getvalue()
    assert digest == rec.sha256() == hashlib.sha256(text.encode()).hexdigest()
    lines = text.splitlines()
    assert lines[0] == ",".join(EVENT_COLUMNS)
    assert lines[2].startswith("0.30000000000000004,update,0,1,0,")  # floats written exactly


def test_the_appender_adds_the_row_record_would():
    slow, fast = EventRecorder(), EventRecorder()
    slow.record(1.5, "update", 2, 7, 40, None, 3, None, None, 0.25, 0.5, 0.0, 1.0, 1)
    fast.appender()((1.5, "update", 2, 7, 40, None, 3, None, None, 0.25, 0.5, 0.0, 1.0, 1))
    assert fast.rows == slow.rows and len(fast.rows[0]) == len(EVENT_COLUMNS)
    assert fast.sha256() == slow.sha256()
