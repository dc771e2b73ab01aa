"""``--fragmented`` and ``--stream_to -`` through the real command line process (stand-in weights of
reduced width, dlib landmarks): the fragmented MP4 arrives on stdout while the video is being made."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.video import probe, read_audio, read_frames, sidecar_path
from sadtalker_ext.video.fmp4 import read_fragments, top_level_boxes
from tests.test_output_safety import REPO, SR, _argv, env  # noqa: F401 - env is a fixture

FRAMES = 110  # 4.4 s: four whole fragments and a short one


@pytest.fixture(scope="module")
def speech(env):  # noqa: F811 - the imported fixture
    import soundfile as sf

    root, _ = env
    samples, _ = sf.read(root / "long.wav", dtype="float32")  # 2.4 s
    path = root / "speech44.wav"
    sf.write(path, np.tile(samples, 2)[: FRAMES * SR // 25], SR, subtype="FLOAT")
    return path.name


class Reader(threading.Thread):
    """Collects a pipe's bytes; ``wait_for(pred)`` blocks until the bytes so far satisfy ``pred``."""

    def __init__(self, pipe) -> None:
        super().__init__(daemon=True)
        self.pipe, self.data, self.cond, self.closed = pipe, bytearray(), threading.Condition(), False

    def run(self) -> None:
        while chunk := self.pipe.read1(1 << 16):
            with self.cond:
                self.data += chunk
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 600) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred(bytes(self.data)) or self.closed, timeout) and pred(
                bytes(self.data)
            )


def test_stream_to_stdout_while_generating(env, speech, tmp_path):  # noqa: F811
    out, gate = tmp_path / "out", tmp_path / "gate"
    argv = _argv(env, speech, "--result_dir", str(out), "--seed", "3", "--stream_to", "-")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stream_gate", str(gate), "--", *argv[3:]],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    reader = Reader(proc.stdout)
    reader.start()
    err_reader = Reader(proc.stderr)
    err_reader.start()
    try:
        # held at the gate once the first fragment is on stdout, frames still to come
        got = reader.wait_for(lambda d: len(read_fragments(d)) >= 1)
        assert got, f"no fragment before the end: {bytes(err_reader.data).decode(errors='replace')[-2000:]}"
        assert proc.poll() is None  # the generation is still running (held at the gate)
        early = bytes(reader.data)
        assert top_level_boxes(early)[:4] == [b"ftyp", b"moov", b"moof", b"mdat"]
        assert not any(
            p.suffix == ".mp4" and p.stat().st_size for p in out.iterdir() if not p.name.startswith(".")
        )
    finally:
        gate.touch()
    proc.wait(timeout=600)
    reader.join(60)
    err_reader.join(60)
    err = bytes(err_reader.data).decode(errors="replace")
    assert proc.returncode == 0, err
    saved = out / f"face__{Path(speech).stem}.mp4"
    assert str(saved) in err  # the result line went to stderr; stdout is only the video
    streamed = bytes(reader.data)
    assert streamed == saved.read_bytes()
    frags = read_fragments(streamed)
    assert [f.track(1).samples for f in frags] == [25, 25, 25, 25, 10]
    assert all(f.track(1).first_is_sync for f in frags)
    # decodes to the right length, sound and all
    piped = tmp_path / "piped.mp4"
    piped.write_bytes(streamed)
    info = probe(piped)
    # the audio: the video's length plus the untrimmed rest of the last AAC frame (test_fragmented_mp4)
    assert info.num_frames == FRAMES and 0 <= info.audio_samples - FRAMES * SR // 25 < 1024
    assert info.settings["num_frames"] == FRAMES and info.settings["seed"] == 3
    assert read_frames(piped).shape[0] == FRAMES


def test_a_reader_that_does_not_read_does_not_hold_back_the_video(env, tmp_path):  # noqa: F811
    """Nobody reads stdout while the video is made: the fragments wait in memory, the file is still finished
    (a pipe holds 64 KiB; the stream is much larger), and the reader gets every byte afterwards."""
    out = tmp_path / "out"
    argv = _argv(
        env, "long.wav", "--result_dir", str(out), "--seed", "3", "--no_progress", "--stream_to", "-"
    )
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    saved = out / "face__long.mp4"
    deadline = time.monotonic() + 900  # a hang guard, not a timing assertion
    try:
        while not (saved.is_file() and saved.stat().st_size > 0 and sidecar_path(saved).is_file()):
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
            assert time.monotonic() < deadline, "the video was not finished while stdout was not read"
            time.sleep(0.2)
        size = saved.stat().st_size
        assert size > 4 * 65536  # more than a pipe holds: the writer did not wait for the reader
        streamed, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert streamed == saved.read_bytes()


def test_fragmented_file_without_streaming_matches_the_normal_run(env, tmp_path):  # noqa: F811
    normal, frag = tmp_path / "n.mp4", tmp_path / "f.mp4"
    base = _argv(env, "speech.wav", "--seed", "3", "--no_progress")  # 2 frames: the flag, not the encoder
    for target, extra in ((normal, []), (frag, ["--fragmented"])):
        res = subprocess.run(
            [*base, "--output", str(target), *extra], cwd=REPO, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr
        assert str(target) in res.stdout  # without streaming the result line stays on stdout
    assert b"moof" not in top_level_boxes(normal.read_bytes())
    assert top_level_boxes(frag.read_bytes()) == [b"ftyp", b"moov", b"moof", b"mdat", b"mfra"]
    a, b = probe(normal), probe(frag)
    assert a.num_frames == b.num_frames == 2 and a.audio_samples == 2 * SR // 25
    assert [f.track(1).samples for f in read_fragments(frag.read_bytes())] == [2]
    np.testing.assert_array_equal(read_audio(normal), read_audio(frag)[: a.audio_samples])
    # the same rendered frames reach both encoders (the keyframe interval, the one setting that differs,
    # makes no difference over two frames; its effect is measured in tests/test_fragmented_mp4.py)
    between = np.abs(read_frames(normal).astype(int) - read_frames(frag).astype(int))
    assert between.mean() < 1, between.mean()
    assert {k: v for k, v in a.settings["options"].items() if k != "output"} == {
        k: v for k, v in b.settings["options"].items() if k != "output"
    }


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--stream_to", "out.mp4"], "only '-'"),
        (["--stream_to", "-", "--driven_audio", "a.wav", "b.wav"], "one video"),
    ],
)
def test_stream_to_refusals(env, tmp_path, extra, needle):  # noqa: F811
    root, _ = env
    for name in ("a.wav", "b.wav"):
        (tmp_path / name).write_bytes((root / "speech.wav").read_bytes())
    extra = [str(tmp_path / e) if e.endswith(".wav") else e for e in extra]
    res = subprocess.run(
        [*_argv(env), "--result_dir", str(tmp_path / "r"), *extra], cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert res.stdout == ""
