"""Test-only entry: the real command line (``sadtalker_ext.cli.main``) that stops rendering once frames
are in the encoder, so a test can signal it while it is provably mid-video.

``python -m tests.frame_gate HELD -- CLI ARGS...``: after the first chunk of frames was handed to the
writer, the file ``HELD`` is created and the frame stream waits (at most 10 minutes) for the test's signal
(SIGTERM interrupts the wait; Ctrl-C asks the run to cancel, which the wait watches) instead of racing it to
the end of a short video. No sleeps in product code.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    held, sep, *cli_args = argv
    if sep != "--":
        raise SystemExit("usage: python -m tests.frame_gate HELD -- CLI ARGS...")
    from sadtalker_ext import cli
    from sadtalker_ext.pipeline import SadTalker

    original = SadTalker.iter_video_frames

    def held_after_first_chunk(self, prep):
        for n, chunk in enumerate(original(self, prep)):
            yield chunk
            if n == 0:  # the writer has taken the first chunk: wait here for the signal
                Path(held).touch()
                deadline = time.monotonic() + 600
                while not prep.stopped() and time.monotonic() < deadline:  # Ctrl-C asks to cancel
                    time.sleep(0.05)

    SadTalker.iter_video_frames = held_after_first_chunk
    return cli.main(cli_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
