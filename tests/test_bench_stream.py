"""bench.stream: the stall count a real-time player would see (pure arithmetic on arrival times)."""

from __future__ import annotations

import pytest

from bench.stream import stalls


@pytest.mark.parametrize(
    ("arrivals", "durations", "expected"),
    [
        ([], [], (0, 0.0)),
        ([2.0, 2.5, 3.0, 3.9], [1, 1, 1, 0.4], (0, 0.0)),  # always ahead of playback
        ([2.0, 3.0, 4.0], [1, 1, 1], (0, 0.0)),  # each arrives just as the one before ends
        ([2.0, 3.5, 4.0], [1, 1, 1], (1, 0.5)),  # waits 0.5 s for the second; the third is then in time
        ([1.0, 4.0, 8.0], [1, 1, 1], (2, 5.0)),  # 2 s, then 3 s (playback resumed at 4, ends the 2nd at 5)
    ],
)
def test_stalls(arrivals, durations, expected):
    assert stalls(arrivals, durations) == expected
