"""VideoWriter(fragmented=True / sink=...): fragmented MP4 with the audio interleaved, streamed as written."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.errors import CancelledError, InputError
from sadtalker_ext.video import VideoWriter, partial_path, probe, read_audio, read_frames, sidecar_path
from sadtalker_ext.video.fmp4 import SegmentSplitter, read_fragments, top_level_boxes
from sadtalker_ext.video.writer import ffmpeg_exe
from tests.test_video_writer import FPS, SR, _frames, _tone

N = 87  # 3.48 s: three whole fragments and a short one; 55680 audio samples, not a whole number of AAC frames


def _write(path: Path, frames: np.ndarray, audio: np.ndarray | None, **kw) -> Path:
    with VideoWriter(path, num_frames=len(frames), audio=audio, sample_rate=SR, fps=FPS, **kw) as vw:
        for i in range(0, len(frames), 7):
            vw.write(frames[i : i + 7])
        return vw.finish()


def _key_flags(path: Path) -> list[bool]:
    """Keyframe flag of every video packet in decode order, as ffmpeg's demuxer reports it (no decoding)."""
    res = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path),
         "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [line for line in res.stdout.splitlines() if line and not line.startswith("#")]
    return ["F=0x0" not in row for row in rows]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same frames and audio written as a normal mp4 and as a fragmented one."""
    folder = tmp_path_factory.mktemp("fmp4")
    frames = _frames(N, 96, 80, seed=3)
    audio = _tone(N / FPS + 0.3, freq=330.0)
    meta = {"seed": 5, "options": {"source": "x.png"}}
    normal = _write(folder / "normal.mp4", frames, audio, metadata=meta)
    fragmented = _write(folder / "frag.mp4", frames, audio, metadata=meta, fragmented=True)
    return frames, normal, fragmented


def test_fragmented_file_layout_and_keyframes(pair):
    _frames_in, _normal, frag = pair
    data = frag.read_bytes()
    boxes = top_level_boxes(data)
    assert boxes[:2] == [b"ftyp", b"moov"]
    assert boxes[2:10] == [b"moof", b"mdat"] * 4 and boxes[10:] == [b"mfra"]
    fragments = read_fragments(data)
    assert len(fragments) == 4
    video = [f.track(1) for f in fragments]
    audio = [f.track(2) for f in fragments]
    assert [v.samples for v in video] == [25, 25, 25, 12]  # one second each, from a keyframe
    assert all(v.first_is_sync for v in video)
    assert [v.base_decode_time for v in video] == sorted(v.base_decode_time for v in video)
    assert all(a is not None and a.samples > 0 for a in audio)  # the audio interleaved in every fragment
    # the demuxer agrees: packet 0, 25, 50, 75 are the keyframes (fixed GOP, no scene-cut keyframes)
    keys = _key_flags(frag)
    assert len(keys) == N
    assert [i for i, k in enumerate(keys) if k] == [0, 25, 50, 75]


def test_fragmented_decodes_like_the_normal_file(pair):
    frames, normal, frag = pair
    a, b = probe(normal), probe(frag)
    assert b.num_frames == a.num_frames == N
    assert (b.width, b.height, b.fps, b.video_codec, b.pix_fmt) == (
        a.width,
        a.height,
        a.fps,
        "h264",
        "yuv420p",
    )
    assert b.has_audio and (b.audio_codec, b.audio_sample_rate) == ("aac", SR)
    # same audio: the same samples reach the same AAC encoder, and both files drop its priming samples
    # (edit list); the samples of the video's length decode bit-identically. The one difference: the
    # fragmented moov is written before the end is known, so nothing trims the encoder's last 1024-sample
    # frame: up to 1023 samples (< 64 ms at 16 kHz) of it decode after the video's end
    assert a.audio_samples == N * SR // FPS
    extra = b.audio_samples - a.audio_samples
    assert 0 <= extra < 1024 and (a.audio_samples + extra) % 1024 == 0
    np.testing.assert_array_equal(read_audio(frag)[: a.audio_samples], read_audio(normal))
    assert b.settings == a.settings and b.settings["num_frames"] == N
    assert json.loads(sidecar_path(frag).read_text()) == b.settings
    # video: the fixed GOP (a keyframe every second) is the one encoder choice that differs, so the
    # decoded frames are not bit-identical; both are as close to the input as each other
    fa, fb = read_frames(normal).astype(int), read_frames(frag).astype(int)
    src = frames.astype(int)
    err_a, err_b = np.abs(fa[:, :96, :80] - src).mean(), np.abs(fb[:, :96, :80] - src).mean()
    between = np.abs(fa - fb).mean()
    assert err_b < 6 and err_b < 1.5 * err_a + 0.5, (err_a, err_b)
    assert between < 3, between
    # same frame timing: the first frame is shown at 0 in both (edit list), same duration
    assert a.video_duration == b.video_duration == pytest.approx(N / FPS)


def test_sink_gets_each_segment_before_finish(tmp_path):
    got: list[bytes] = []
    first_fragment = threading.Event()

    def sink(segment: bytes) -> None:
        got.append(segment)
        if b"moof" in top_level_boxes(segment):
            first_fragment.set()

    n = 300  # x264 keeps back its look-ahead (40), B-frames and a frame per thread: machine-dependent
    frames = _frames(n, 64, 64, seed=1)
    out = tmp_path / "live.mp4"
    with VideoWriter(out, num_frames=n, audio=_tone(n / FPS), sink=sink) as vw:
        vw.write(frames)
        assert first_fragment.wait(120), "no fragment reached the sink before the input was closed"
        assert out.stat().st_size == 0  # the final name is still the empty placeholder
        assert top_level_boxes(got[0]) == [b"ftyp", b"moov"]  # the init segment comes alone, first
        done = vw.finish()
    # each segment is whole: the init segment, then moof + mdat pairs, then the index
    kinds = [top_level_boxes(s) for s in got]
    assert kinds[0] == [b"ftyp", b"moov"] and kinds[-1] == [b"mfra"]
    assert all(k == [b"moof", b"mdat"] for k in kinds[1:-1]) and len(kinds) == 2 + n // FPS
    assert b"".join(got) == done.read_bytes()  # what streamed is exactly the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.json", "live.mp4"]


def test_a_failing_sink_does_not_stop_the_file(tmp_path, caplog):
    calls = []

    def sink(segment: bytes) -> None:
        calls.append(len(segment))
        raise BrokenPipeError("reader went away")

    out = tmp_path / "still.mp4"
    vw = VideoWriter(out, num_frames=30, audio=_tone(1.2), sink=sink, sidecar=False)
    vw.write(_frames(30, 32, 32))
    vw.finish()
    assert len(calls) == 1 and isinstance(vw.sink_error, BrokenPipeError)
    assert probe(out).num_frames == 30
    assert "consumer failed" in caplog.text


def test_fragmented_needs_the_frame_count_with_audio(tmp_path):
    with pytest.raises(InputError, match="needs num_frames"):
        VideoWriter(tmp_path / "x.mp4", audio=_tone(1.0), fragmented=True)
    assert list(tmp_path.iterdir()) == []
    silent = VideoWriter(tmp_path / "s.mp4", fragmented=True, sidecar=False)  # silent: any frame count
    silent.write(_frames(5, 16, 16))
    silent.finish()
    assert probe(tmp_path / "s.mp4").num_frames == 5 and not probe(tmp_path / "s.mp4").has_audio


def test_fragmented_failure_leaves_nothing(tmp_path):
    out = tmp_path / "fail.mp4"
    got: list[bytes] = []
    with (
        pytest.raises(RuntimeError, match="boom"),
        VideoWriter(out, num_frames=80, audio=_tone(3.2), sink=got.append) as vw,
    ):
        vw.write(_frames(70, 32, 32))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_fragmented_cancel_keeps_a_playable_partial(tmp_path):
    out = tmp_path / "cut.mp4"
    with (
        pytest.raises(CancelledError) as info,
        VideoWriter(out, num_frames=80, audio=_tone(3.2), fragmented=True, keep_partial=True) as vw,
    ):
        vw.write(_frames(30, 32, 32))
        raise CancelledError("stop")
    kept = partial_path(out)
    assert info.value.partial_path == kept and not out.exists()
    part = probe(kept)
    assert part.num_frames == 30 and part.audio_samples == 30 * SR // FPS  # audio trimmed to the frames
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]


def test_splitter_joins_halves_cut_anywhere(pair):
    data = pair[2].read_bytes()
    whole = SegmentSplitter().feed(data)
    for step in (1, 7, 4096):
        splitter, out = SegmentSplitter(), []
        for i in range(0, len(data), step):
            out += splitter.feed(data[i : i + step])
        assert out == whole and splitter.flush() == b""
    assert len(whole) == 6 and b"".join(whole) == data
