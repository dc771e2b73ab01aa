"""The one place that finds and runs ffmpeg (the binary bundled with ``imageio-ffmpeg``).

Every ffmpeg call of the package goes through here: argument lists only (never a shell), ``-nostdin`` and
``-hide_banner`` always, a timeout chosen by the kind of call (:data:`TIMEOUTS_S`), and errors that say what
failed, with the exit status and the last lines ffmpeg wrote to stderr (:class:`FFmpegError`).

Processes run in their own session / process group (:func:`detached_kwargs`): a Ctrl-C in the terminal goes
to the whole foreground process group, and ffmpeg must not die from it before Python has finished (or kept a
partial copy of) what it was writing. A run that is interrupted (or times out) kills its ffmpeg.

The executable: ``IMAGEIO_FFMPEG_EXE`` when set (checked to exist), else the one ``imageio-ffmpeg`` finds
(its bundled binary, then conda's, then the system's).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from .errors import SadTalkerError

TIMEOUTS_S: dict[str, float] = {
    "audio": 900.0,  # decode a recording (up to the longest accepted) to wav
    "frame": 60.0,  # decode one picture-sized frame
    "mux": 600.0,  # copy the video stream and encode the audio (AAC) into the final mp4
    "probe": 900.0,  # list a video's packets, or decode it whole to count or read its frames
    "encode_flush": 900.0,  # after the last frame: the encoder finishing what is buffered
}
"""Upper bound in seconds on one ffmpeg call, by kind of call. Encoders fed frame by frame
(:func:`start`) have no bound while frames come (rendering sets the pace), only ``encode_flush`` once the
input is closed."""

STDERR_LINES = 3
"""How many of ffmpeg's last stderr lines an error message quotes."""

_BASE_ARGS = ("-hide_banner", "-nostdin")


class FFmpegError(SadTalkerError):
    """An ffmpeg call failed: not found, could not start, timed out, or exited with a non-zero status.

    ``what``: the task in words; ``returncode``: ffmpeg's exit status (None when it did not run to an
    end); ``stderr``: all it wrote to stderr; ``stderr_tail``: its last stderr lines joined by `` | ``."""

    def __init__(self, message: str, *, what: str, returncode: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.what = what
        self.returncode = returncode
        self.stderr = stderr
        self.stderr_tail = stderr_tail(stderr)

    @property
    def last_line(self) -> str:
        """ffmpeg's last stderr line, else its exit status in words."""
        return self.stderr_tail.rpartition(" | ")[2] or f"ffmpeg exit status {self.returncode}"


class FFmpegNotFoundError(FFmpegError):
    """No usable ffmpeg executable."""


class FFmpegTimeoutError(FFmpegError):
    """An ffmpeg call ran past its timeout and was stopped."""


def ffmpeg_exe() -> str:
    """Path of the ffmpeg executable (see the module docstring); :class:`FFmpegNotFoundError` saying what to
    do when there is none."""
    configured = os.environ.get("IMAGEIO_FFMPEG_EXE")
    if configured:
        found = configured if Path(configured).is_file() else shutil.which(configured)
        if not found:
            raise FFmpegNotFoundError(
                f"cannot start ffmpeg: IMAGEIO_FFMPEG_EXE names {configured!r}, which is not an executable "
                "file; point it to an ffmpeg executable or unset it to use the one of imageio-ffmpeg",
                what="finding ffmpeg",
            )
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise FFmpegNotFoundError(
            "cannot start ffmpeg: the Python package imageio-ffmpeg, which provides it, is not installed "
            "(pip install imageio-ffmpeg)",
            what="finding ffmpeg",
        ) from exc
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise FFmpegNotFoundError(
            f"cannot start ffmpeg: imageio-ffmpeg found no ffmpeg executable ({exc}); reinstall "
            "imageio-ffmpeg or set IMAGEIO_FFMPEG_EXE to an ffmpeg executable",
            what="finding ffmpeg",
        ) from exc


def detached_kwargs() -> dict[str, Any]:
    """``subprocess`` arguments that start a process in its own session / process group, out of reach of the
    terminal's Ctrl-C and of signals sent to the caller's group."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _text(stderr: bytes | str | None) -> str:
    if not stderr:
        return ""
    return stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr


def stderr_tail(stderr: bytes | str | None, lines: int = STDERR_LINES) -> str:
    """The last ``lines`` non-blank lines of ffmpeg's stderr, joined by `` | ``."""
    kept = [ln.strip() for ln in _text(stderr).splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def failure(what: str, returncode: int | None, stderr: bytes | str | None) -> FFmpegError:
    """The error for ffmpeg exiting with ``returncode`` while doing ``what``, quoting its stderr tail."""
    tail = stderr_tail(stderr)
    message = f"{what} failed (ffmpeg exit status {returncode})" + (f": {tail}" if tail else "")
    return FFmpegError(message, what=what, returncode=returncode, stderr=_text(stderr))


def _command(args: list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(args, str):  # a shell string would be split wrongly (and is not allowed)
        raise TypeError("ffmpeg arguments must be a list of strings, not one string")
    return [ffmpeg_exe(), *_BASE_ARGS, *(str(a) for a in args)]


def run(
    args: list[str] | tuple[str, ...],
    *,
    kind: str,
    what: str,
    check: bool = True,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
    timeout_s: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``ffmpeg ARGS`` to its end, detached from the terminal, and return it (stdout as bytes when
    ``stdout`` is a pipe; stderr captured as bytes).

    ``kind``: a key of :data:`TIMEOUTS_S` (the timeout, unless ``timeout_s`` is given); ``what``: the task in
    words, for error messages (e.g. "decoding audio 'a.m4a'"). Raises :class:`FFmpegNotFoundError`,
    :class:`FFmpegTimeoutError` (ffmpeg killed), :class:`FFmpegError` when it cannot start or, with
    ``check``, when it exits with a non-zero status.
    """
    limit = TIMEOUTS_S[kind] if timeout_s is None else timeout_s
    cmd = _command(args)
    try:
        # subprocess.run kills the child on a timeout and on any exception (KeyboardInterrupt included)
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=limit,
            check=False,
            **detached_kwargs(),
        )
    except subprocess.TimeoutExpired as exc:
        tail = stderr_tail(exc.stderr)
        raise FFmpegTimeoutError(
            f"{what} took longer than {limit:g} s; ffmpeg was stopped" + (f" ({tail})" if tail else ""),
            what=what,
            stderr=_text(exc.stderr),
        ) from exc
    except OSError as exc:
        raise FFmpegError(f"cannot start ffmpeg ({cmd[0]}) for {what}: {exc}", what=what) from exc
    if check and proc.returncode != 0:
        raise failure(what, proc.returncode, proc.stderr)
    return proc


def start(
    args: list[str] | tuple[str, ...],
    *,
    what: str,
    stderr: IO[bytes] | int = subprocess.DEVNULL,
    read: bool = False,
    stdout: IO[bytes] | int = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start ``ffmpeg ARGS`` detached from the terminal, stderr to ``stderr`` (a file, so a long run cannot
    fill a pipe). Default: a writer, fed through ``proc.stdin`` (unbuffered; stdout discarded unless
    ``stdout`` says otherwise: ``subprocess.PIPE`` for a filter fed and read at once, whose ``proc.stdout``
    (unbuffered) the caller must keep reading or ffmpeg blocks); with ``read``: a reader, whose output comes
    from ``proc.stdout`` (buffered, so ``read(n)`` returns ``n`` bytes until the end; stdin empty). The
    caller closes the pipe it uses and waits (:func:`wait`)."""
    cmd = _command(args)
    pipes: dict[str, Any] = (
        {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "bufsize": -1}
        if read
        else {"stdin": subprocess.PIPE, "stdout": stdout, "bufsize": 0}
    )
    try:
        return subprocess.Popen(cmd, stderr=stderr, **pipes, **detached_kwargs())
    except OSError as exc:
        raise FFmpegError(f"cannot start ffmpeg ({cmd[0]}) for {what}: {exc}", what=what) from exc


def wait(proc: subprocess.Popen[bytes], *, kind: str, what: str) -> int:
    """Wait for a started ffmpeg at most ``TIMEOUTS_S[kind]`` seconds; kill it and raise
    :class:`FFmpegTimeoutError` past that. Returns the exit status."""
    limit = TIMEOUTS_S[kind]
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise FFmpegTimeoutError(
            f"{what} took longer than {limit:g} s; ffmpeg was stopped", what=what
        ) from exc
