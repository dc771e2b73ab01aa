"""video/probe.py on files made here with the bundled ffmpeg: every figure from ffmpeg's machine-readable
outputs (framecrc listing, H.264 parameter set, -progress, ffmetadata), across containers and codecs."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from sadtalker_ext.errors import InputError
from sadtalker_ext.ffmpeg import ffmpeg_exe
from sadtalker_ext.video import count_frames, iter_frames, probe, read_audio, read_frames
from sadtalker_ext.video.probe import h264_pix_fmt


def _make(path, *args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args, str(path)], check=True)


TESTSRC = ("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25")


@pytest.mark.parametrize(
    ("pix_fmt", "expected"), [("yuv420p", "yuv420p"), ("yuv444p", "yuv444p"), ("yuv422p10le", "yuv422p10le")]
)
def test_h264_pixel_format_from_the_parameter_set(tmp_path, pix_fmt, expected):
    out = tmp_path / "v.mp4"
    _make(out, *TESTSRC, "-t", "0.2", "-c:v", "libx264", "-pix_fmt", pix_fmt)
    info = probe(out)
    assert (info.video_codec, info.pix_fmt, info.width, info.height) == ("h264", expected, 96, 64)
    assert info.num_frames == 5 and info.fps == pytest.approx(25.0)
    assert not info.has_audio and info.audio_codec is None and info.audio_samples is None


def test_h264_pix_fmt_needs_a_parameter_set():
    assert h264_pix_fmt(b"") is None
    assert h264_pix_fmt(b"\x00\x00\x01\x67\x64") is None  # truncated parameter set
    assert h264_pix_fmt(b"\x00\x00\x01\x65\x88\x84") is None  # a slice, no parameter set


def test_other_container_codec_and_stereo_audio(tmp_path):
    out = tmp_path / "v.mkv"
    _make(
        out, *TESTSRC, "-f", "lavfi", "-i", "sine=r=22050:f=300", "-t", "0.4", "-c:v", "ffv1",
        "-c:a", "pcm_s16le", "-ac", "2", "-metadata", "title=hello",
    )  # fmt: skip
    info = probe(out)
    assert (info.video_codec, info.pix_fmt, info.num_frames) == ("ffv1", None, 10)
    assert info.fps == pytest.approx(25.0)
    assert (info.audio_codec, info.audio_sample_rate, info.audio_channels) == ("pcm_s16le", 22050, 2)
    assert info.audio_samples == read_audio(out).shape[0] == round(0.4 * 22050)
    assert info.metadata["title"] == "hello"
    quick = probe(out, count=False, decode_audio=False)
    assert quick.num_frames == 0 and quick.audio_samples is None and quick.audio_channels == 2


def test_aac_samples_match_the_decoded_audio(tmp_path):
    out = tmp_path / "v.mp4"
    _make(
        out,
        *TESTSRC,
        "-f",
        "lavfi",
        "-i",
        "sine=r=16000",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-c:a",
        "aac",
        "-ac",
        "1",
    )
    info = probe(out)
    assert (info.audio_codec, info.audio_sample_rate, info.audio_channels) == ("aac", 16000, 1)
    assert info.audio_samples == read_audio(out).shape[0]
    assert info.audio_duration == pytest.approx(1.0, abs=0.07)


def test_frames_stream_and_read_alike(tmp_path):
    out = tmp_path / "v.mkv"
    _make(out, *TESTSRC, "-t", "0.28", "-c:v", "ffv1")
    whole = read_frames(out)
    assert whole.shape == (7, 64, 96, 3) and count_frames(out) == 7
    streamed = list(iter_frames(out))
    np.testing.assert_array_equal(np.stack(streamed), whole)
    np.testing.assert_array_equal(read_frames(out, max_frames=2), whole[:2])
    first = iter_frames(out)
    np.testing.assert_array_equal(next(first), whole[0])
    first.close()  # stopping early ends the decoder (no error, nothing left running to wait for)


def test_rotated_video_frames_come_upright(tmp_path):
    out = tmp_path / "r.mp4"
    _make(out, "-display_rotation", "90", *TESTSRC, "-t", "0.12", "-c:v", "libx264")
    frames = read_frames(out)
    assert frames.shape[1:3] == (96, 64)
    assert next(iter_frames(out)).shape == (96, 64, 3)


def test_not_a_video_is_refused(tmp_path):
    wav = tmp_path / "a.wav"
    _make(wav, "-f", "lavfi", "-i", "sine=r=16000", "-t", "0.1")
    with pytest.raises(InputError, match="no video stream"):
        probe(wav)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 64)
    with pytest.raises(InputError, match=r"cannot read the streams of .*junk\.mp4"):
        probe(junk)
    with pytest.raises(InputError, match=r"cannot read video frames from junk\.mp4"):
        next(iter_frames(junk))
    with pytest.raises(InputError, match="video not found"):
        probe(tmp_path / "missing.mp4")
