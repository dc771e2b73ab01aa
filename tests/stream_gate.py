"""Test-only entry: the real command line (``sadtalker_ext.cli.main``) with the renderer held at a gate.

``python -m tests.stream_gate GATE AFTER -- CLI ARGS...``: after ``AFTER`` final frames have gone to the
encoder, the frame stream waits until the file ``GATE`` exists, then goes on. A test can so see what the
process has streamed while the generation is provably still running (no sleeps in product code).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    gate, after, sep, *cli_args = argv
    if sep != "--":
        raise SystemExit("usage: python -m tests.stream_gate GATE AFTER -- CLI ARGS...")
    from sadtalker_ext import cli
    from sadtalker_ext.pipeline import SadTalker

    original = SadTalker.iter_video_frames

    def gated(self, prep):
        sent = 0
        for batch in original(self, prep):
            yield batch
            sent += len(batch)
            if sent >= int(after):
                while not Path(gate).exists():  # the test opens the gate (once open, no more waiting)
                    time.sleep(0.05)

    SadTalker.iter_video_frames = gated
    return cli.main(cli_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
