"""Stream RGB frames into an H.264 mp4 with the speech muxed in, without holding the video in memory.

How a video is made (bundled ffmpeg of ``imageio-ffmpeg``, argument lists only):

1. ``write()`` pipes uint8 RGB frames into an ffmpeg process that encodes them as H.264
   (``libx264``, ``yuv420p``, 25 fps) into a hidden, video-only file in the destination folder.
   ``yuv420p`` needs even sizes: an odd width or height is padded by ONE pixel on the right /
   bottom, repeating the last column / row (nothing is cropped away).
2. ``finish()`` writes the audio samples as a 16-bit PCM wav, trimmed or zero-padded to exactly
   ``frames * sample_rate / fps`` samples, and muxes it as AAC with the video (video stream copied;
   no ``-shortest``: both streams have the same length by construction). The generation settings go
   into the ``comment`` tag as JSON and into a sidecar ``<name>.json``.
3. The result is renamed to the final path only when complete. On any failure or exception nothing
   is left at the final path; on cancel, :meth:`VideoWriter.abort` can keep a playable
   ``<name>.partial.mp4`` holding the frames written so far (audio trimmed to them).

Names are never taken twice (:func:`reserve_output`): the writer claims its final name at once by
creating an empty placeholder there with an exclusive create (``O_CREAT | O_EXCL``), so two writers
(threads or processes) never pick the same file; the finished video replaces the placeholder in one
rename, and a failed or cancelled run removes it. ``on_exists`` says what happens when the name is
taken: ``"error"`` (refuse), ``"unique"`` (the next free ``<name>-2.mp4``, ``-3``...) or ``"overwrite"``.

Fragmented MP4 (``fragmented=True``, or a ``sink``): ONE ffmpeg process reads the frames on stdin and the
audio (fitted to ``num_frames`` up front, so ``num_frames`` is required with audio) as a second input, and
writes a fragmented MP4 to a pipe: the init segment (``ftyp`` + a ``moov`` without samples), then one
fragment (``moof`` + ``mdat``) per second of video, each starting on a keyframe (fixed GOP of ``fps``
frames, no scene-cut keyframes), the AAC audio of that second interleaved in it, then an ``mfra`` index.
The encoder settings are otherwise those of the normal file (libx264, same ``crf`` / ``preset``,
``yuv420p``; AAC 128 kb/s); the moov is written just before the first fragment (``delay_moov``) so it
carries the edit lists that start the video at 0 and drop the AAC priming samples, as in the normal file.
Two differences from the normal file, both measured in ``tests/test_fragmented_mp4.py``: the keyframe every
second changes x264's frame decisions (decoded frames differ from the normal file's by about one level on
average, each as close to the input as the other); and nothing trims the AAC encoder's last frame (the
moov is written before the end is known), so up to 1023 samples (< 64 ms at 16 kHz) of it decode after the
video's end; the samples of the video's length are identical.
A reader thread copies the bytes into the hidden temp file and hands each whole segment (the init
segment, then each fragment; :class:`.fmp4.SegmentSplitter`) to ``sink`` as soon as ffmpeg has written
it; the temp file is renamed to the final name only by :meth:`VideoWriter.finish`. x264's look-ahead
holds frames back: the first fragment leaves the encoder after about ``fps`` + 40 frames were written
(``preset`` medium), the last ones at :meth:`VideoWriter.finish`.

The ffmpeg processes run in their own session (process group), started by :mod:`sadtalker_ext.ffmpeg`:
a Ctrl-C in the terminal, which goes to the whole foreground process group, reaches Python only, so a
partial video can still be finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tempfile
import threading
import uuid
import wave
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from .. import ffmpeg
from ..errors import CancelledError, InputError, SadTalkerError
from ..ffmpeg import detached_kwargs
from ..ffmpeg import ffmpeg_exe as ffmpeg_exe  # re-exported: where callers found it before

_detached = detached_kwargs  # this module's name for it before sadtalker_ext.ffmpeg; kept for callers

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial.mp4"
FRAGMENT_MOVFLAGS = "+empty_moov+delay_moov+default_base_moof+frag_keyframe"
"""mp4 muxer flags of the fragmented output (a fragment is cut at every video keyframe)."""
READ_CHUNK = 1 << 16
Sink = Callable[[bytes], None]
"""Receives each whole fMP4 segment as it is written (init segment first, then fragment by fragment)."""
ON_EXISTS = ("error", "unique", "overwrite")
"""What a writer does when its output name is taken (see the module docstring)."""


def even_size(width: int, height: int) -> tuple[int, int]:
    """Encoded size for a ``width x height`` frame: each odd dimension grows by one pixel."""
    return width + (width & 1), height + (height & 1)


def pad_even(frame: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(H', W', 3)`` with H', W' even, repeating the last row / column."""
    h, w = frame.shape[:2]
    if not (h & 1 or w & 1):
        return frame
    return np.pad(frame, ((0, h & 1), (0, w & 1), (0, 0)), mode="edge")


def sidecar_path(video_path: str | os.PathLike) -> Path:
    """``<name>.json`` beside ``<name>.mp4``."""
    return Path(video_path).with_suffix(".json")


def partial_path(video_path: str | os.PathLike) -> Path:
    """``<name>.partial.mp4`` beside ``<name>.mp4``."""
    p = Path(video_path)
    return p.with_name(p.stem + PARTIAL_SUFFIX)


def check_folder(folder: str | os.PathLike) -> Path:
    """:class:`InputError` now if ``folder`` could not hold output files (a file in the way, no permission,
    a read-only disk), without creating anything: the early check, before any model loads, that leaves no
    empty folder behind when a later check fails. Returns ``folder`` as a Path."""
    folder = Path(folder)
    for part in (folder, *folder.parents):  # the nearest part that exists must be a writable folder
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                what = f"{part} is a file" if part.is_file() else f"{part} exists but is not a folder"
                raise InputError(
                    f"cannot create the output folder {folder}: {what}; choose another output folder"
                )
            if not os.access(part, os.W_OK | os.X_OK):
                what = "is not writable" if part == folder else f"cannot be created in {part} (not writable)"
                raise InputError(f"the output folder {folder} {what}; choose another output folder")
            break
    return folder


def ensure_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) for output files; :class:`InputError` saying what is wrong
    when it cannot be (see :func:`check_folder`)."""
    folder = check_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the output folder {folder}: {exc.strerror or exc}; choose another output folder"
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"the output folder {folder} is not writable; choose another output folder")
    return folder


def _numbered(path: Path, n: int) -> Path:
    """``path`` for ``n == 1``, else ``<stem>-<n><suffix>``."""
    return path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")


def check_output_free(path: str | os.PathLike, on_exists: str = "error") -> None:
    """With ``on_exists='error'``: :class:`InputError` when ``path`` or its sidecar already exists
    (a cheap early check; :func:`reserve_output` is the one that holds against races)."""
    if on_exists not in ON_EXISTS:
        raise InputError(f"on_exists must be one of {', '.join(ON_EXISTS)}; got {on_exists!r}")
    if on_exists != "error":
        return
    path = Path(path)
    side = sidecar_path(path)
    for taken, what in ((path, ""), (side, f" (the settings file written beside {path.name})")):
        if taken.exists() or taken.is_symlink():
            raise InputError(
                f"the output file {taken} already exists{what}; choose another output name, or allow "
                "replacing it (--overwrite)"
            )


def reserve_output(path: str | os.PathLike, on_exists: str = "error") -> tuple[Path, bool]:
    """Claim an output name: ``(path claimed, whether an empty placeholder was created there)``.

    ``"error"``/``"unique"``: the name is created exclusively (an empty placeholder), so no other writer
    can take it; ``"unique"`` moves on to ``<stem>-2``, ``-3``... while a name, its sidecar or its
    partial file exists. ``"overwrite"``: nothing is created (the finished file replaces what is there).
    """
    path = Path(path)
    check_output_free(path, on_exists)
    if on_exists == "overwrite":
        return path, False
    n = 1
    while True:
        candidate = _numbered(path, n)
        n += 1
        if on_exists == "unique" and any(
            p.exists() or p.is_symlink() for p in (sidecar_path(candidate), partial_path(candidate))
        ):
            continue
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if on_exists == "unique":
                continue
            raise InputError(
                f"the output file {candidate} already exists; choose another output name, or allow "
                "replacing it (--overwrite)"
            ) from None
        except OSError as exc:
            raise InputError(f"cannot create the output file {candidate}: {exc.strerror or exc}") from exc
        os.close(fd)
        return candidate, True


def _remove_placeholder(path: Path, stat: os.stat_result | None) -> None:
    """Remove the empty placeholder made by :func:`reserve_output`, unless something replaced it."""
    if stat is None:
        return
    with contextlib.suppress(OSError):
        now = path.stat()
        if (now.st_dev, now.st_ino) == (stat.st_dev, stat.st_ino) and now.st_size == 0:
            path.unlink()


def release_output(path: str | os.PathLike, placeholder: os.stat_result | None) -> None:
    """Give back a name claimed with :func:`reserve_output` (``placeholder``: the stat of the empty file
    it made, or ``None``): the placeholder is removed unless a finished file replaced it."""
    _remove_placeholder(Path(path), placeholder)


def temp_files_of(path: str | os.PathLike) -> list[Path]:
    """Hidden files a :class:`VideoWriter` for ``path`` makes beside it while it works
    (``.<stem>.<tag>.video.mp4``, ``.mux.mp4``, ``.wav``): what a writer killed mid-video leaves behind."""
    path = Path(path)
    pattern = f".{path.stem}." + "[0-9a-f]" * 10 + ".*"
    return sorted(path.parent.glob(pattern)) if path.parent.is_dir() else []


def install_finished(path: str | os.PathLike, video: bytes, sidecar_text: str | None) -> Path:
    """Put a finished video made elsewhere (another process or machine) at ``path``, and its sidecar
    beside it: each written under a temporary name and renamed, the video first; when the sidecar cannot
    be written the video is removed again. ``path`` may hold the placeholder of :func:`reserve_output`."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:10]}.install.mp4")
    try:
        tmp.write_bytes(video)
        tmp.replace(path)
    except OSError as exc:
        raise SadTalkerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if sidecar_text is not None:
        try:
            _atomic_write_text(sidecar_path(path), sidecar_text)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            if isinstance(exc, OSError):
                raise SadTalkerError(f"cannot write {sidecar_path(path)}: {exc.strerror or exc}") from exc
            raise
    return path


def audio_samples_for(num_frames: int, sample_rate: int, fps: int) -> int:
    """Number of audio samples covering ``num_frames`` video frames (16 kHz, 25 fps: 640 per frame)."""
    return round(num_frames * sample_rate / fps)


def fit_audio(samples: np.ndarray, length: int) -> np.ndarray:
    """Mono samples trimmed, or zero-padded at the end, to exactly ``length``."""
    if samples.shape[0] >= length:
        return samples[:length]
    return np.concatenate([samples, np.zeros(length - samples.shape[0], dtype=samples.dtype)])


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono samples as 16-bit PCM: floats in [-1, 1] (clipped) or int16 as they are."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise InputError(f"audio must be mono (1-D samples), got shape {samples.shape}")
    if samples.dtype == np.int16:
        pcm = samples
    else:
        pcm = np.rint(np.clip(samples.astype(np.float64), -1.0, 1.0) * 32767.0).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.astype("<i2").tobytes())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class VideoWriter:
    """Write one mp4: frames streamed in, audio and metadata added at the end, atomic rename.

    Use as a context manager; leaving the block with an exception aborts (nothing at ``path``;
    with :class:`CancelledError` and ``keep_partial`` a ``<name>.partial.mp4`` is kept), leaving it
    normally without calling :meth:`finish` also aborts.

    Args:
        path: wanted ``.mp4`` path; its folder is created and the name claimed at once
            (:func:`reserve_output`); :attr:`path` is the name actually claimed.
        on_exists: ``"error"`` (default), ``"unique"`` or ``"overwrite"`` when that name is taken.
        num_frames: the frame count the video must have (checked in :meth:`finish`); ``None``
            accepts whatever was written.
        audio: mono samples at ``sample_rate`` (float in [-1, 1] or int16), or ``None`` for a
            silent video; trimmed / zero-padded to the frame count.
        metadata: JSON-ready settings stored in the mp4 ``comment`` tag and the sidecar.
        sidecar: also write ``<name>.json`` holding ``metadata``.
        crf, preset: libx264 quality (lower crf = better) and speed preset.
        fragmented: write a fragmented MP4 (module docstring); needs ``num_frames`` when there is audio.
        sink: called (from a reader thread) with each whole fMP4 segment as soon as it is written; implies
            ``fragmented``. An exception from it is logged once and the sink is not called again (the file
            is still written); it should hand the bytes on quickly (the encoder waits while it runs).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        num_frames: int | None = None,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        fps: int = 25,
        metadata: Mapping[str, Any] | None = None,
        sidecar: bool = True,
        keep_partial: bool = True,
        crf: int = 18,
        preset: str = "medium",
        on_exists: str = "error",
        fragmented: bool = False,
        sink: Sink | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise InputError(f"output must be an .mp4 file, got {self.path}")
        if num_frames is not None and num_frames < 1:
            raise InputError(f"num_frames must be >= 1, got {num_frames}")
        self.fragmented = bool(fragmented or sink is not None)
        if self.fragmented and audio is not None and num_frames is None:
            raise InputError("a fragmented video with audio needs num_frames (the audio is muxed as it goes)")
        self.sink = sink
        self.sink_error: BaseException | None = None
        """What the sink raised, if it did (it was not called again after that)."""
        self._reader: threading.Thread | None = None
        self._read_error: BaseException | None = None
        self.num_frames = num_frames
        self.audio = None if audio is None else np.asarray(audio).reshape(-1)
        self.sample_rate = int(sample_rate)
        self.fps = int(fps)
        self.metadata = dict(metadata or {})
        self.sidecar = sidecar
        self.keep_partial = keep_partial
        self.crf = int(crf)
        self.preset = preset
        self.frames_written = 0
        self.frame_size: tuple[int, int] | None = None
        """``(width, height)`` of the frames as given (before even padding)."""
        self._proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self._tag = uuid.uuid4().hex[:10]
        self._closed = False
        self.on_exists = on_exists
        self._pending = b""
        """Bytes of a frame only partly sent to the encoder (an interrupt during the pipe write)."""
        ensure_folder(self.path.parent)
        self.path, made = reserve_output(self.path, on_exists)
        self._placeholder = self.path.stat() if made else None

    # ------------------------------------------------------------------ names
    def _temp(self, suffix: str) -> Path:
        return self.path.with_name(f".{self.path.stem}.{self._tag}{suffix}")

    @property
    def _video_only(self) -> Path:
        """The encoder's output: video only, or (fragmented) the whole fMP4 with audio."""
        return self._temp(".stream.mp4" if self.fragmented else ".video.mp4")

    # ------------------------------------------------------------------ streaming
    def _start(self, width: int, height: int) -> None:
        ew, eh = even_size(width, height)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the writer
        if self.fragmented:
            self._start_fragmented(width, height, ew, eh)
            return
        args = [
            "-y", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{ew}x{eh}", "-r", str(self.fps), "-i", "-",
            "-an", "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p",
            "-r", str(self.fps), "-f", "mp4", str(self._video_only),
        ]  # fmt: skip
        log.debug("starting encoder: ffmpeg %s", args)
        self._proc = ffmpeg.start(args, what="the video encoder", stderr=self._log)
        self.frame_size = (width, height)

    def _start_fragmented(self, width: int, height: int, ew: int, eh: int) -> None:
        """One ffmpeg: rawvideo on stdin + the fitted wav -> fMP4 on stdout, read by :meth:`_read_stream`."""
        cmd = [
            "-y", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{ew}x{eh}", "-r", str(self.fps), "-i", "-",
        ]  # fmt: skip
        if self.audio is not None:
            assert self.num_frames is not None
            wav = self._temp(".in.wav")
            write_wav(
                wav, fit_audio(self.audio, audio_samples_for(self.num_frames, self.sample_rate, self.fps)),
                self.sample_rate,
            )  # fmt: skip
            cmd += ["-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        else:
            cmd += ["-map", "0:v:0"]
        cmd += [
            "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p",
            "-r", str(self.fps), "-g", str(self.fps), "-keyint_min", str(self.fps), "-sc_threshold", "0",
            "-movflags", FRAGMENT_MOVFLAGS, "-flush_packets", "1",
        ]  # fmt: skip
        meta = dict(self.metadata)
        if self.num_frames is not None:
            meta.setdefault("num_frames", self.num_frames)
        if meta:
            cmd += ["-metadata", "comment=" + json.dumps(meta, sort_keys=True, default=str)]
        cmd += ["-f", "mp4", "pipe:1"]
        log.debug("starting fragmented encoder: ffmpeg %s", cmd)
        try:
            out = open(self._video_only, "wb")  # noqa: SIM115 - closed by the reader thread
        except OSError as exc:
            raise SadTalkerError(f"cannot create {self._video_only}: {exc.strerror or exc}") from exc
        try:
            self._proc = ffmpeg.start(
                cmd, what="the fragmented video encoder", stderr=self._log, stdout=subprocess.PIPE
            )
        except BaseException:
            out.close()
            raise
        self.frame_size = (width, height)
        self._reader = threading.Thread(
            target=self._read_stream, args=(self._proc.stdout, out), name="sadtalker-fmp4", daemon=True
        )
        self._reader.start()

    def _read_stream(self, pipe: IO[bytes], out: IO[bytes]) -> None:
        """Reader thread: ffmpeg's fMP4 bytes -> the temp file and, segment by segment, the sink. Keeps
        draining the pipe after a failure (so the encoder never blocks); the failure is raised by finish()."""
        from .fmp4 import SegmentSplitter

        splitter = SegmentSplitter()
        try:
            while True:
                data = pipe.read(READ_CHUNK)
                if not data:
                    break
                if self._read_error is None:
                    try:
                        out.write(data)
                        out.flush()
                    except OSError as exc:
                        self._read_error = exc
                if self.sink is not None and self.sink_error is None:
                    for segment in splitter.feed(data):
                        if self.sink_error is None:
                            self._to_sink(segment)
            rest = splitter.flush()
            if rest and self.sink is not None and self.sink_error is None:
                self._to_sink(rest)
        except BaseException as exc:  # reported by finish()
            self._read_error = exc
        finally:
            with contextlib.suppress(OSError):
                out.close()
            with contextlib.suppress(OSError):
                pipe.close()

    def _to_sink(self, segment: bytes) -> None:
        assert self.sink is not None
        try:
            self.sink(segment)
        except BaseException as exc:  # the consumer's problem; the file goes on
            self.sink_error = exc
            log.warning("the fragmented-MP4 consumer failed (%s); the video file is still written", exc)

    def _join_reader(self, timeout: float | None = None) -> None:
        if self._reader is not None:
            self._reader.join(timeout)
            if not self._reader.is_alive():
                self._reader = None

    def _ffmpeg_error(self, what: str) -> SadTalkerError:
        """The encoder's failure, quoting the last lines it wrote to its stderr file."""
        stderr = b""
        if self._log is not None:
            self._log.seek(0)
            stderr = self._log.read()
        tail = ffmpeg.stderr_tail(stderr)
        return SadTalkerError(f"video encoding failed ({what})" + (f": {tail}" if tail else ""))

    def write(self, frames: np.ndarray) -> None:
        """Append ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 RGB frames (all the same size)."""
        if self._closed:
            raise SadTalkerError("the video writer is already closed")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 (N, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
        n, h, w = frames.shape[:3]
        if n == 0:
            return
        if self._proc is None:
            self._start(w, h)
        elif (w, h) != self.frame_size:
            raise InputError(f"frame size changed from {self.frame_size} to {(w, h)}")
        if self.num_frames is not None and self.frames_written + n > self.num_frames:
            raise SadTalkerError(f"more frames than expected: {self.frames_written + n} > {self.num_frames}")
        for frame in frames:
            self._pending = memoryview(np.ascontiguousarray(pad_even(frame)).tobytes())
            self._send_pending()

    def _send_pending(self) -> None:
        """Send the rest of the current frame; it counts once all its bytes are in the pipe. An
        interrupt in between leaves the rest in ``_pending`` (sent by :meth:`abort` for a partial)."""
        assert self._proc is not None and self._proc.stdin is not None
        try:
            while self._pending:
                sent = self._proc.stdin.write(self._pending)
                self._pending = self._pending[sent or 0 :]
        except (BrokenPipeError, OSError) as exc:
            self._proc.wait()
            raise self._ffmpeg_error("the encoder stopped") from exc
        self.frames_written += 1

    def _close_encoder(self) -> None:
        """Flush and wait for the video-only encode; raises if ffmpeg failed."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        rc = ffmpeg.wait(proc, kind="encode_flush", what="finishing the video encode")
        self._proc = None
        self._join_reader()
        if rc != 0:
            raise self._ffmpeg_error(f"exit status {rc}")
        if self._read_error is not None:
            error = self._read_error
            raise SadTalkerError(
                f"video encoding failed (writing {self._video_only.name}: {error})"
            ) from error

    def _mux(self, frames: int, destination: Path, metadata: Mapping[str, Any]) -> None:
        """Video-only temp + audio (fitted to ``frames``) -> ``destination`` (via a temp name)."""
        muxed = self._temp(".mux.mp4")
        wav = self._temp(".wav")
        args = ["-y", "-loglevel", "error", "-i", str(self._video_only)]
        try:
            if self.audio is not None:
                write_wav(
                    wav,
                    fit_audio(self.audio, audio_samples_for(frames, self.sample_rate, self.fps)),
                    self.sample_rate,
                )
                args += ["-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
            else:
                args += ["-map", "0:v:0"]
            args += ["-c:v", "copy", "-movflags", "+faststart"]
            if metadata:
                args += ["-metadata", "comment=" + json.dumps(metadata, sort_keys=True, default=str)]
            args += ["-f", "mp4", str(muxed)]
            try:
                ffmpeg.run(args, kind="mux", what="muxing audio", stdout=subprocess.DEVNULL)
            except ffmpeg.FFmpegError as exc:
                raise SadTalkerError(f"video encoding failed ({exc})") from exc
            muxed.replace(destination)
        finally:
            for p in (muxed, wav):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    def _cleanup(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(Exception):
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            with contextlib.suppress(Exception):
                self._proc.kill()
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=10)
            self._proc = None
        self._join_reader(timeout=10)
        for temp in (self._video_only, self._temp(".in.wav")):
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        _remove_placeholder(self.path, self._placeholder)
        self._placeholder = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._closed = True

    # ------------------------------------------------------------------ endings
    def finish(self) -> Path:
        """Complete the video; returns the final path. On failure nothing is left at that path."""
        if self._closed:
            raise SadTalkerError("the video writer is already closed")
        try:
            if self.frames_written == 0:
                raise SadTalkerError("no frames were written")
            if self.num_frames is not None and self.frames_written != self.num_frames:
                raise SadTalkerError(f"expected {self.num_frames} frames, got {self.frames_written}")
            self._close_encoder()
            meta = dict(self.metadata)
            meta.setdefault("num_frames", self.frames_written)
            if self.fragmented:  # audio and metadata are in already
                self._video_only.replace(self.path)
            else:
                self._mux(self.frames_written, self.path, meta)
            self._placeholder = None  # replaced by the video
            if self.sidecar:
                try:
                    _atomic_write_text(
                        sidecar_path(self.path), json.dumps(meta, indent=2, sort_keys=True, default=str)
                    )
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    raise
            return self.path
        finally:
            self._cleanup()

    def abort(self, *, keep_partial: bool = False) -> Path | None:
        """Stop without a final video. With ``keep_partial`` and frames written, returns the path of a
        playable ``<name>.partial.mp4`` (frames so far, audio trimmed to them; a normal, unfragmented mp4
        also when the writer was fragmented); otherwise ``None``."""
        if self._closed:
            return None
        try:
            if keep_partial and self._proc is not None and (self.frames_written > 0 or self._pending):
                target, stat = None, None
                try:
                    if self._pending:  # complete the frame an interrupt cut in the middle
                        self._send_pending()
                    self._close_encoder()
                    meta = dict(self.metadata, partial=True, num_frames=self.frames_written)
                    if self.num_frames is not None:
                        meta["expected_frames"] = self.num_frames
                    on_exists = "overwrite" if self.on_exists == "overwrite" else "unique"
                    target, made = reserve_output(partial_path(self.path), on_exists)
                    stat = target.stat() if made else None
                    self._mux(self.frames_written, target, meta)
                    return target
                except BaseException as exc:
                    if target is not None:
                        _remove_placeholder(target, stat)
                    if not isinstance(exc, SadTalkerError):
                        raise
                    log.warning("could not keep a partial video: %s", exc)
            return None
        finally:
            self._cleanup()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._closed:
            return
        cancelled = exc_type is not None and issubclass(exc_type, CancelledError | KeyboardInterrupt)
        kept = self.abort(keep_partial=cancelled and self.keep_partial)
        if kept is not None and exc is not None:
            exc.partial_path = kept  # type: ignore[attr-defined]
