"""Random eye-blink track of SadTalker (official ``generate_blink_seq_randomly``), with an explicit RNG.

Schedule for a clip of ``T`` video frames (25 fps), as in the official code:

* ``T <= 20``: no blink (all zeros).
* Otherwise a cursor starts at frame 0. Repeatedly draw a gap ``g`` uniformly from the integers
  ``[min(10, T), min(int(T / 2), 70))``; if ``cursor + g + 5 <= T - 1`` the five frames
  ``cursor + g .. cursor + g + 4`` get the blink profile 0.5, 0.9, 1.0, 0.9, 0.5 and the cursor moves to
  ``cursor + g + 5``; otherwise stop.

The official code draws the gaps with Python's ``random.choice``; here they come from the numpy
``Generator`` passed in (``rng.integers(low, high)``), so one seed gives one schedule.

Fix of an official crash: for exactly ``T = 21`` the official range ``[10, 10)`` is empty and
``random.choice`` raises ``IndexError``. Here an empty range falls back to its lower end (gap 10), which is
what ``T = 22`` (range ``[10, 11)``) always draws; the result is one blink at frames 10..14. No other ``T``
has an empty range (for ``T >= 22`` the upper end is at least 11), so every other schedule is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BLINK_PROFILE = (0.5, 0.9, 1.0, 0.9, 0.5)
"""Eye-closing ratio of the five frames of one blink (1.0 = fully closed)."""

MIN_FRAMES_FOR_BLINK = 21
"""Clips shorter than this many frames never blink."""


def blink_ratio_from_draws(num_frames: int, draw: Callable[[int, int], int]) -> np.ndarray:
    """Blink track (T, 1) float32 with gaps taken from ``draw(low, high)`` (an integer in ``[low, high)``).

    ``draw`` is called only with ``low < high``; this is the seam that lets tests drive the schedule
    with Python's ``random`` exactly as the official code does.
    """
    num_frames = int(num_frames)
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    track = np.zeros((num_frames, 1), dtype=np.float32)
    if num_frames < MIN_FRAMES_FOR_BLINK:
        return track
    low = min(10, num_frames)
    high = min(int(num_frames / 2), 70)
    n_blink = len(BLINK_PROFILE)
    cursor = 0
    while 0 <= cursor < num_frames:
        gap = low if high <= low else int(draw(low, high))  # empty range: only T == 21 (see module doc)
        start = cursor + gap
        if start + n_blink > num_frames - 1:
            break
        track[start : start + n_blink, 0] = BLINK_PROFILE
        cursor = start + n_blink
    return track


def blink_ratio(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Random blink track (T, 1) float32 in [0, 1]; the same ``rng`` state gives the same track."""
    return blink_ratio_from_draws(num_frames, lambda low, high: int(rng.integers(low, high)))
