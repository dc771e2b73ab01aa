"""Inspect an mp4 with the bundled ffmpeg (no ffprobe needed): size, frame count, audio, metadata.

Used by the tests and by the front ends (to show what was produced). Frame and audio-sample
counts come from actually decoding the streams, not from container headers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import ffmpeg
from ..errors import InputError

_VIDEO_RE = re.compile(
    r"Stream #\d+:\d+[^:]*: Video: (?P<codec>\w+).*?, (?P<pix>\w+)(?:\([^)]*\))?, (?P<w>\d+)x(?P<h>\d+)"
)
_FPS_RE = re.compile(r"(?P<fps>\d+(?:\.\d+)?) fps")
_AUDIO_RE = re.compile(r"Stream #\d+:\d+[^:]*: Audio: (?P<codec>\w+)[^,]*, (?P<sr>\d+) Hz, (?P<layout>[^,]+)")


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. Durations in seconds."""

    path: Path
    width: int
    height: int
    num_frames: int
    """Decoded video frames."""
    fps: float
    video_codec: str
    pix_fmt: str
    has_audio: bool
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_samples: int | None = None
    """Decoded samples per channel (None without audio or when not decoded)."""
    metadata: dict[str, str] = field(default_factory=dict)
    """Global container tags (``comment``, ``encoder``, ...)."""

    @property
    def video_duration(self) -> float:
        return self.num_frames / self.fps if self.fps else 0.0

    @property
    def audio_duration(self) -> float | None:
        if self.audio_samples is None or not self.audio_sample_rate:
            return None
        return self.audio_samples / self.audio_sample_rate

    @property
    def settings(self) -> dict[str, Any] | None:
        """The JSON generation settings stored in the ``comment`` tag, if any."""
        text = self.metadata.get("comment")
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None


def _run(args: list[str], *, text: bool = True) -> subprocess.CompletedProcess:
    res = ffmpeg.run(args, kind="probe", what=f"reading {args[args.index('-i') + 1]}", check=False)
    if text:
        res.stdout = res.stdout.decode("utf-8", "replace")
        res.stderr = res.stderr.decode("utf-8", "replace")
    return res


def _unescape_ffmetadata(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Global tags of a media file (``ffmetadata`` export, unescaped)."""
    res = _run(["-loglevel", "error", "-i", str(path), "-f", "ffmetadata", "-"])
    if res.returncode != 0:
        raise InputError(f"cannot read metadata of {path}: {res.stderr.strip()[-300:]}")
    tags: dict[str, str] = {}
    key: str | None = None
    for line in res.stdout.splitlines()[1:]:
        if key is None:
            if line.startswith("["):
                break  # stream / chapter sections follow the global tags
            k, sep, v = line.partition("=")
            if not sep or line.startswith((";", "#")):
                continue
            key, tags[k] = k, v
        else:  # continuation after an escaped newline
            tags[key] += "\n" + line
        trailing = len(tags[key]) - len(tags[key].rstrip("\\"))
        if trailing % 2 == 1:  # odd backslashes at the end: the newline itself was escaped
            tags[key] = tags[key][:-1]
        else:
            key = None
    return {k: _unescape_ffmetadata(v) for k, v in tags.items()}


def count_frames(path: str | os.PathLike) -> int:
    """Number of decoded frames of the first video stream."""
    res = _run(
        ["-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-f", "null", "-progress", "pipe:1", "-"]
    )
    if res.returncode != 0:
        raise InputError(f"cannot decode {path}: {res.stderr.strip()[-300:]}")
    found = re.findall(r"^frame=(\d+)", res.stdout, flags=re.M)
    return int(found[-1]) if found else 0


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> np.ndarray:
    """First audio stream decoded to ``(samples,)`` float32 mono in [-1, 1] (channel mean)."""
    args = ["-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1"]
    if sample_rate:
        args += ["-ar", str(int(sample_rate))]
    res = _run([*args, "-f", "f32le", "-"], text=False)
    if res.returncode != 0:
        raise InputError(
            f"cannot decode audio of {path}: {res.stderr.decode(errors='replace').strip()[-300:]}"
        )
    return np.frombuffer(res.stdout, dtype="<f4").copy()


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time as ``(H, W, 3)`` uint8 RGB (native frame rate)."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise InputError(f"cannot read video frames from {Path(path).name}: {exc}") from exc
    width, height = meta["size"]
    try:
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode ``(N, H, W, 3)`` uint8 RGB frames (small videos only: everything is in memory)."""
    info = probe(path, count=False, decode_audio=False)
    args = ["-loglevel", "error", "-i", str(path), "-map", "0:v:0"]
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    res = _run([*args, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], text=False)
    if res.returncode != 0:
        raise InputError(f"cannot decode {path}: {res.stderr.decode(errors='replace').strip()[-300:]}")
    frame_bytes = info.width * info.height * 3
    n = len(res.stdout) // frame_bytes
    return (
        np.frombuffer(res.stdout[: n * frame_bytes], np.uint8).reshape(n, info.height, info.width, 3).copy()
    )


def probe(path: str | os.PathLike, *, count: bool = True, decode_audio: bool = True) -> VideoInfo:
    """Describe a video file. ``count`` decodes the video to count frames (else 0);
    ``decode_audio`` decodes the audio to count samples (else ``audio_samples`` is None)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    res = _run(["-i", str(path)])
    text = res.stderr
    vm = _VIDEO_RE.search(text)
    if vm is None:
        raise InputError(f"no video stream in {path}")
    fps_m = _FPS_RE.search(text[vm.start() : text.find("\n", vm.start())])
    am = _AUDIO_RE.search(text)
    channels = None
    if am is not None:
        layout = am.group("layout").strip()
        channels = {"mono": 1, "stereo": 2}.get(layout.split("(")[0].strip())
        if channels is None:
            m = re.match(r"(\d+) channels", layout)
            channels = int(m.group(1)) if m else None
    samples = None
    if am is not None and decode_audio:
        samples = int(read_audio(path).shape[0])
    return VideoInfo(
        path=path,
        width=int(vm.group("w")),
        height=int(vm.group("h")),
        num_frames=count_frames(path) if count else 0,
        fps=float(fps_m.group("fps")) if fps_m else 0.0,
        video_codec=vm.group("codec"),
        pix_fmt=vm.group("pix"),
        has_audio=am is not None,
        audio_codec=am.group("codec") if am else None,
        audio_sample_rate=int(am.group("sr")) if am else None,
        audio_channels=channels,
        audio_samples=samples,
        metadata=read_metadata(path),
    )
