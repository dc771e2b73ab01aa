"""Test-only entry: the real command line (``sadtalker_ext.cli.main``) held at a gate while it streams.

``python -m tests.stream_gate GATE -- CLI ARGS...``: once the first fragment has been written to standard
output (``--stream_to -``), the frame stream waits until the file ``GATE`` exists, then goes on. A test can
so see what the process has streamed while the generation is provably still running (no sleeps in product
code). How many frames x264 keeps back before the first fragment depends on the machine (look-ahead,
B-frames, a frame per encoder thread), so the gate waits for the fragment, not for a frame count.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    gate, sep, *cli_args = argv
    if sep != "--":
        raise SystemExit("usage: python -m tests.stream_gate GATE -- CLI ARGS...")
    from sadtalker_ext import cli
    from sadtalker_ext.pipeline import SadTalker
    from sadtalker_ext.video.fmp4 import top_level_boxes

    streamed = threading.Event()
    write = cli.StdoutSink.__call__

    def watched(self, data: bytes) -> None:
        write(self, data)
        if b"moof" in top_level_boxes(data):
            streamed.set()

    original = SadTalker.iter_video_frames

    def gated(self, prep):
        for batch in original(self, prep):
            yield batch
            if streamed.is_set():
                while not Path(gate).exists():  # the test opens the gate (once open, no more waiting)
                    time.sleep(0.05)

    cli.StdoutSink.__call__ = watched
    SadTalker.iter_video_frames = gated
    return cli.main(cli_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
