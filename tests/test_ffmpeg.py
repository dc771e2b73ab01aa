"""The ffmpeg adapter (sadtalker_ext/ffmpeg.py): finding the executable, errors that say what failed, timeouts,
and processes kept out of the terminal's process group. Real ffmpeg processes throughout."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from sadtalker_ext import ffmpeg
from sadtalker_ext.audio.decode import load_audio
from sadtalker_ext.errors import InputError, SadTalkerError
from sadtalker_ext.images import load_rgb
from sadtalker_ext.video import VideoWriter


def test_finds_the_bundled_executable():
    exe = ffmpeg.ffmpeg_exe()
    out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, check=True)
    assert out.stdout.startswith(b"ffmpeg version")


def test_missing_executable_named_by_env_is_a_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-ffmpeg"
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(missing))
    with pytest.raises(ffmpeg.FFmpegNotFoundError, match=r"IMAGEIO_FFMPEG_EXE names .*no-such-ffmpeg") as err:
        ffmpeg.run(["-version"], kind="probe", what="asking the version")
    assert "unset it" in str(err.value) and err.value.returncode is None


def test_missing_imageio_ffmpeg_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    with pytest.raises(ffmpeg.FFmpegNotFoundError, match=r"pip install imageio-ffmpeg"):
        ffmpeg.ffmpeg_exe()


def test_missing_executable_reaches_users_as_their_error(tmp_path, monkeypatch):
    """Audio that needs ffmpeg, a video picture and the writer each say that ffmpeg could not start."""
    exe = ffmpeg.ffmpeg_exe()
    m4a = tmp_path / "a.m4a"
    subprocess.run(
        [exe, "-v", "error", "-f", "lavfi", "-i", "sine=r=16000", "-t", "0.3", "-c:a", "aac", str(m4a)],
        check=True,
    )
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "gone"))
    with pytest.raises(InputError, match="cannot start ffmpeg"):
        load_audio(m4a)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="cannot start ffmpeg"):
        load_rgb(video)
    out = tmp_path / "x.mp4"
    vw = VideoWriter(out, num_frames=2)
    with pytest.raises(SadTalkerError, match="cannot start ffmpeg"):
        vw.write(np.zeros((2, 8, 8, 3), np.uint8))
    vw.abort()
    assert not out.exists()


def test_bad_exit_quotes_the_last_stderr_lines(tmp_path):
    missing = tmp_path / "nothing-here.mp4"
    with pytest.raises(ffmpeg.FFmpegError) as err:
        ffmpeg.run(["-i", str(missing), "-f", "null", "-"], kind="probe", what="decoding the test clip")
    exc = err.value
    assert exc.returncode not in (None, 0)
    assert str(exc).startswith(f"decoding the test clip failed (ffmpeg exit status {exc.returncode}): ")
    assert "nothing-here.mp4" in exc.stderr_tail and "No such file" in exc.stderr_tail
    assert exc.stderr_tail in str(exc) and exc.last_line in exc.stderr_tail


def test_check_false_returns_the_failed_process(tmp_path):
    res = ffmpeg.run(["-i", str(tmp_path / "none.wav")], kind="probe", what="x", check=False)
    assert res.returncode != 0 and b"No such file" in res.stderr


def test_stderr_tail_keeps_the_last_nonblank_lines():
    text = "one\n\ntwo\n  three  \nfour\n\n"
    assert ffmpeg.stderr_tail(text) == "two | three | four"
    assert ffmpeg.stderr_tail(text.encode(), lines=1) == "four"
    assert ffmpeg.stderr_tail(None) == "" and ffmpeg.stderr_tail(b"") == ""


def test_timeout_stops_ffmpeg_with_a_clear_error():
    # an endless generated source: only the timeout ends this call
    args = ["-re", "-f", "lavfi", "-i", "color=c=black:s=16x16:r=25", "-f", "null", "-"]
    with pytest.raises(ffmpeg.FFmpegTimeoutError, match=r"counting nothing took longer than 0\.5 s"):
        ffmpeg.run(args, kind="probe", what="counting nothing", timeout_s=0.5)


def test_timeout_by_kind_comes_from_the_table(monkeypatch):
    monkeypatch.setitem(ffmpeg.TIMEOUTS_S, "frame", 0.4)
    args = ["-re", "-f", "lavfi", "-i", "color=c=black:s=16x16:r=25", "-f", "null", "-"]
    with pytest.raises(ffmpeg.FFmpegTimeoutError, match=r"took longer than 0\.4 s"):
        ffmpeg.run(args, kind="frame", what="reading")


def test_wait_past_its_timeout_kills_the_encoder(monkeypatch):
    monkeypatch.setitem(ffmpeg.TIMEOUTS_S, "encode_flush", 0.5)
    proc = ffmpeg.start(
        ["-f", "rawvideo", "-s", "8x8", "-pix_fmt", "gray", "-i", "-", "-f", "null", "-"], what="t"
    )
    try:  # stdin stays open: ffmpeg waits for frames forever
        with pytest.raises(ffmpeg.FFmpegTimeoutError, match=r"took longer than 0\.5 s"):
            ffmpeg.wait(proc, kind="encode_flush", what="finishing")
        assert proc.poll() is not None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
        proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="sessions and process groups are POSIX")
def test_started_ffmpeg_is_out_of_the_callers_process_group():
    proc = ffmpeg.start(
        ["-f", "rawvideo", "-s", "8x8", "-pix_fmt", "gray", "-i", "-", "-f", "null", "-"], what="t"
    )
    try:
        assert os.getpgid(proc.pid) != os.getpgid(0)
        assert os.getsid(proc.pid) != os.getsid(0)
    finally:
        proc.stdin.close()
        assert ffmpeg.wait(proc, kind="encode_flush", what="t") == 0


def test_arguments_must_be_a_list():
    with pytest.raises(TypeError, match="list of strings"):
        ffmpeg.run("-version", kind="probe", what="x")  # type: ignore[arg-type]
