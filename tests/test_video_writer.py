"""VideoWriter: streamed frames + audio -> H.264/AAC mp4, atomic final path, partial on cancel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.errors import CancelledError, InputError, SadTalkerError
from sadtalker_ext.video import VideoWriter, partial_path, probe, read_audio, read_frames, sidecar_path
from sadtalker_ext.video.writer import audio_samples_for, fit_audio, pad_even

SR = 16000
FPS = 25


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth coloured frames (encode well, so decoded values stay close to the input)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        base = rng.integers(40, 200, size=3)
        for c in range(3):
            out[i, :, :, c] = np.clip(
                base[c] + 30 * np.sin((xx + 7 * i) / 11.0 + c) + 20 * np.cos(yy / 9.0), 0, 255
            )
    return out


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_helpers_fit_audio_and_pad():
    a = np.arange(10, dtype=np.float32)
    assert fit_audio(a, 4).tolist() == [0, 1, 2, 3]
    padded = fit_audio(a, 13)
    assert padded.shape == (13,) and padded[10:].tolist() == [0, 0, 0] and padded[:10].tolist() == a.tolist()
    assert audio_samples_for(30, 16000, 25) == 19200
    f = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    p = pad_even(f)
    assert p.shape == (4, 6, 3)
    np.testing.assert_array_equal(p[:3, :5], f)
    np.testing.assert_array_equal(p[3, :5], f[2])  # last row repeated
    np.testing.assert_array_equal(p[:3, 5], f[:, 4])  # last column repeated


@pytest.mark.parametrize("audio_seconds", [1.1, 0.8], ids=["audio-longer", "audio-shorter"])
def test_stream_frames_and_audio(tmp_path, audio_seconds):
    n, h, w = 24, 67, 45  # odd size on purpose: padded to 68 x 46
    frames = _frames(n, h, w)
    out = tmp_path / "sub" / "clip.mp4"
    meta = {"options": {"source": "x.png", "pose_style": 3}, "seed": 42, "version": "test"}
    with VideoWriter(
        out, num_frames=n, audio=_tone(audio_seconds), sample_rate=SR, fps=FPS, metadata=meta
    ) as vw:
        for i in range(0, n, 5):  # uneven batches
            vw.write(frames[i : i + 5])
        assert out.stat().st_size == 0  # only the empty placeholder claiming the name before finish()
        result = vw.finish()
    assert result == out and out.is_file()
    info = probe(out)
    assert info.num_frames == n
    assert (info.width, info.height) == (46, 68)
    assert info.width % 2 == 0 and info.height % 2 == 0
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.fps == pytest.approx(25.0)
    assert info.has_audio and info.audio_codec == "aac" and info.audio_sample_rate == SR
    # audio trimmed / padded to the frame count: same duration within one frame
    assert info.audio_duration == pytest.approx(n / FPS, abs=1 / FPS)
    settings = info.settings
    assert settings is not None and settings["seed"] == 42 and settings["options"]["pose_style"] == 3
    assert settings["num_frames"] == n
    side = json.loads(sidecar_path(out).read_text())
    assert side == settings
    # decoded pixels close to the input (lossy, but not garbage); padding replicates the edge
    decoded = read_frames(out)
    assert decoded.shape == (n, 68, 46, 3)
    err = np.abs(decoded[:, :h, :w].astype(int) - frames.astype(int)).mean()
    assert err < 6, err
    assert np.abs(decoded[:, h, :w].astype(int) - frames[:, h - 1].astype(int)).mean() < 8
    # no temporary files left behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.json", "clip.mp4"]


def test_audio_content_survives(tmp_path):
    n = 20
    tone = _tone(n / FPS, freq=300.0)
    out = tmp_path / "tone.mp4"
    with VideoWriter(out, num_frames=n, audio=tone, sidecar=False) as vw:
        vw.write(_frames(n, 32, 32))
        vw.finish()
    dec = read_audio(out)
    assert abs(dec.shape[0] - tone.shape[0]) <= SR // FPS
    m = min(dec.shape[0], tone.shape[0])
    spec = np.abs(np.fft.rfft(dec[:m]))
    peak_hz = np.argmax(spec) * SR / m
    assert abs(peak_hz - 300.0) < 5
    assert not sidecar_path(out).exists()


def test_silent_video(tmp_path):
    out = tmp_path / "silent.mp4"
    with VideoWriter(out, num_frames=3, audio=None, sidecar=False) as vw:
        vw.write(_frames(3, 16, 16))
        vw.finish()
    info = probe(out)
    assert info.num_frames == 3 and not info.has_audio and info.audio_duration is None


def test_exception_midway_leaves_nothing(tmp_path):
    out = tmp_path / "fail.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(out, num_frames=10, audio=_tone(0.4)) as vw:
        vw.write(_frames(4, 32, 32))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_count_leaves_nothing(tmp_path):
    out = tmp_path / "short.mp4"
    vw = VideoWriter(out, num_frames=10, audio=_tone(0.4))
    vw.write(_frames(4, 32, 32))
    with pytest.raises(SadTalkerError, match="expected 10 frames, got 4"):
        vw.finish()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SadTalkerError, match="more frames"):
        VideoWriter(out, num_frames=2).write(_frames(3, 8, 8))


def test_bad_frames_refused(tmp_path):
    vw = VideoWriter(tmp_path / "bad.mp4")
    with pytest.raises(InputError):
        vw.write(np.zeros((2, 8, 8, 3), np.float32))
    vw.write(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="frame size changed"):
        vw.write(np.zeros((10, 8, 3), np.uint8))
    assert vw.abort() is None
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "x.avi")
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(InputError, match="cannot create the output folder"):
        VideoWriter(tmp_path / "afile" / "sub" / "x.mp4")


def test_cancel_keeps_playable_partial(tmp_path):
    out = tmp_path / "cancel.mp4"
    with (
        pytest.raises(CancelledError) as info,
        VideoWriter(out, num_frames=30, audio=_tone(1.2), metadata={"seed": 1}) as vw,
    ):
        vw.write(_frames(7, 40, 40))
        raise CancelledError("stopped")
    part = partial_path(out)
    assert part.name == "cancel.partial.mp4"
    assert info.value.partial_path == part
    assert not out.exists() and not sidecar_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [part.name]
    pinfo = probe(part)
    assert pinfo.num_frames == 7
    assert pinfo.audio_duration == pytest.approx(7 / FPS, abs=1 / FPS)
    assert pinfo.settings["partial"] is True and pinfo.settings["expected_frames"] == 30


def test_cancel_without_partial(tmp_path):
    out = tmp_path / "cancel.mp4"
    vw = VideoWriter(out, num_frames=30, audio=_tone(1.2), keep_partial=False)
    with pytest.raises(CancelledError), vw:
        vw.write(_frames(3, 16, 16))
        raise CancelledError("stopped")
    assert list(tmp_path.iterdir()) == []


def test_encoder_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-such-ffmpeg"))
    out = tmp_path / "x.mp4"
    vw = VideoWriter(out, num_frames=2)
    with pytest.raises(SadTalkerError, match="cannot start ffmpeg"):
        vw.write(_frames(2, 8, 8))
    vw.abort()
    assert not out.exists()


def test_encoder_dying_midway_leaves_nothing(tmp_path):
    out = tmp_path / "dead.mp4"
    vw = VideoWriter(out, num_frames=50, audio=_tone(2.0))
    vw.write(_frames(2, 64, 64))
    vw._proc.kill()  # simulate the encoder crashing
    vw._proc.wait()
    with pytest.raises(SadTalkerError, match="video encoding failed"):
        for _ in range(48):
            vw.write(_frames(1, 64, 64))
        vw.finish()
    vw.abort()
    assert list(tmp_path.iterdir()) == []


def test_iter_frames_and_count(tmp_path):
    from sadtalker_ext.video import count_frames, iter_frames

    out = tmp_path / "it.mp4"
    frames = _frames(6, 40, 30)
    with VideoWriter(out, num_frames=6, sidecar=False) as vw:
        vw.write(frames)
        vw.finish()
    got = list(iter_frames(out))
    assert len(got) == 6 == count_frames(out)
    assert all(f.shape == (40, 30, 3) and f.dtype == np.uint8 for f in got)
    assert np.abs(np.stack(got).astype(int) - frames.astype(int)).mean() < 6
    with pytest.raises(InputError):
        list(iter_frames(tmp_path / "missing.mp4"))


def test_writers_at_once_never_share_a_name(tmp_path):
    """Threads writing the same name (``unique``) each get their own file; nothing already there is touched."""
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "clip.mp4"
    out.write_bytes(b"older video")

    def make(level: int) -> Path:
        with VideoWriter(out, num_frames=2, audio=None, on_exists="unique", metadata={"level": level}) as vw:
            vw.write(np.full((2, 16, 16, 3), level, np.uint8))
            return vw.finish()

    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(make, (40, 80, 120, 160)))
    assert len(set(made)) == 4 and out not in made
    assert {p.name for p in made} == {"clip-2.mp4", "clip-3.mp4", "clip-4.mp4", "clip-5.mp4"}
    assert out.read_bytes() == b"older video"
    for level, path in zip((40, 80, 120, 160), made, strict=True):
        assert probe(path).settings["level"] == level
        assert abs(int(read_frames(path).mean()) - level) <= 2


def test_taken_name_refused_or_overwritten(tmp_path):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"mine")
    with pytest.raises(InputError, match="already exists"):
        VideoWriter(out)
    sidecar_path(tmp_path / "other.mp4").write_text("{}")  # a sidecar in the way counts as taken
    with pytest.raises(InputError, match=r"other\.json already exists"):
        VideoWriter(tmp_path / "other.mp4")
    assert out.read_bytes() == b"mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.mp4",
        "other.json",
    ]
    with VideoWriter(out, num_frames=1, audio=None, on_exists="overwrite") as vw:
        assert out.read_bytes() == b"mine"  # replaced only when the new video is complete
        vw.write(_frames(1, 8, 8))
        vw.finish()
    assert probe(out).num_frames == 1


def test_partial_never_replaces_an_earlier_one_and_a_cut_frame_is_completed(tmp_path):
    out = tmp_path / "cancel.mp4"
    partial_path(out).write_bytes(b"earlier partial")
    vw = VideoWriter(out, num_frames=10, audio=_tone(0.4))
    vw.write(_frames(2, 16, 16))
    vw._pending = memoryview(_frames(1, 16, 16)[0].tobytes())  # as if an interrupt cut the pipe write
    kept = vw.abort(keep_partial=True)
    assert kept == tmp_path / "cancel.partial-2.mp4"
    assert partial_path(out).read_bytes() == b"earlier partial"
    assert probe(kept).num_frames == 3 and probe(kept).settings["num_frames"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cancel.partial-2.mp4", "cancel.partial.mp4"]


def test_check_folder_reports_without_creating(tmp_path):
    from sadtalker_ext.video.writer import check_folder

    deep = tmp_path / "a" / "b" / "c"
    assert check_folder(deep) == deep
    assert list(tmp_path.iterdir()) == []  # nothing made: a later failure leaves no empty folder
    (tmp_path / "afile").write_bytes(b"")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        with pytest.raises(InputError, match=r"afile is a file; choose another output folder"):
            check_folder(bad)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: nothing to refuse there
            assert check_folder(ro / "new") == ro / "new"
        else:
            with pytest.raises(InputError, match="not writable"):
                check_folder(ro / "new")
    finally:
        ro.chmod(0o700)
    assert not (ro / "new").exists()
