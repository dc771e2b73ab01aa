"""Inspect a video with the bundled ffmpeg (no ffprobe, no parsing of ffmpeg's log): size, frame count,
audio, metadata.

Used by the tests and by the front ends (to show what was produced). Every figure comes from a
machine-readable output of ffmpeg (it has no ffprobe here, and PyAV is not a dependency):

* streams (codec, size, time base, sample rate, channel layout) and packets from ffmpeg's ``framecrc``
  muxer: ``#key N: value`` header lines and one ``stream, dts, pts, duration, size, crc`` line per packet,
  a format meant for machines (FFmpeg's own regression tests read it). The audio is also decoded to 16-bit
  PCM in the same call: its packets give the channel count (bytes per sample) and the decoded samples;
* the frame rate from the video packets' durations in the stream's time base;
* the pixel format of H.264 video from its sequence parameter set (chroma format and bit depth), read from
  the first packet copied out as an Annex B stream; other codecs report ``None``;
* decoded frame counts from ``-progress`` (``key=value`` lines), global tags from the ``ffmetadata`` export.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .. import ffmpeg
from ..errors import InputError


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
    pix_fmt: str | None
    """``yuv420p``, ``yuv422p10le``, ... for H.264 (from its parameter set); ``None`` for other codecs."""
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


def _run(path: str | os.PathLike, args: list[str], what: str) -> bytes:
    """stdout of ``ffmpeg -loglevel error -i PATH ARGS``; :class:`InputError` quoting ffmpeg when it fails."""
    try:
        return ffmpeg.run(["-loglevel", "error", "-i", str(path), *args], kind="probe", what=what).stdout
    except ffmpeg.FFmpegError as exc:
        raise InputError(f"cannot {what} of {path}: {exc.stderr_tail or exc}") from exc


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
    text = _run(path, ["-f", "ffmetadata", "-"], "read the metadata").decode("utf-8", "replace")
    tags: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines()[1:]:
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
    out = _run(path, ["-map", "0:v:0", "-f", "null", "-progress", "pipe:1", "-"], "decode the video")
    frames = [line[6:] for line in out.decode("ascii", "replace").splitlines() if line.startswith("frame=")]
    return int(frames[-1]) if frames else 0


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> np.ndarray:
    """First audio stream decoded to ``(samples,)`` float32 mono in [-1, 1] (channel mean)."""
    args = ["-map", "0:a:0", "-ac", "1"]
    if sample_rate:
        args += ["-ar", str(int(sample_rate))]
    return np.frombuffer(_run(path, [*args, "-f", "f32le", "-"], "decode the audio"), dtype="<f4").copy()


def decoded_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of the first video stream's frames as decoded (rotation metadata applied), from
    the ``framecrc`` listing of its first frame."""
    args = ["-map", "0:v:0", "-frames:v", "1", "-c:v", "rawvideo", "-pix_fmt", "rgb24", "-f", "framecrc", "-"]
    streams = _framecrc(_run(path, args, "decode the video").decode("utf-8", "replace"))
    dims = streams[0].header.get("dimensions", "") if 0 in streams else ""
    if "x" not in dims:
        raise InputError(f"no video frame in {path}")
    width, height = (int(v) for v in dims.split("x"))
    return width, height


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time as ``(H, W, 3)`` uint8 RGB (native frame rate)."""
    name = Path(path).name
    try:
        width, height = decoded_size(path)
    except InputError as exc:
        raise InputError(f"cannot read video frames from {name}: {exc}") from exc
    args = [
        "-loglevel",
        "error",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as stderr:
        proc = ffmpeg.start(args, what=f"reading the frames of {name}", stderr=stderr, read=True)
        assert proc.stdout is not None
        try:
            while len(raw := proc.stdout.read(frame_bytes)) == frame_bytes:
                yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
            status = ffmpeg.wait(proc, kind="probe", what=f"reading the frames of {name}")
        finally:  # also when the consumer stops early: the decoder is not left running
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if status != 0:
            stderr.seek(0)
            raise InputError(f"cannot read video frames from {name}: {ffmpeg.stderr_tail(stderr.read())}")


def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode ``(N, H, W, 3)`` uint8 RGB frames (small videos only: everything is in memory)."""
    width, height = decoded_size(path)
    args = ["-map", "0:v:0"]
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    raw = _run(path, [*args, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], "decode the video")
    frame_bytes = width * height * 3
    n = len(raw) // frame_bytes
    return np.frombuffer(raw[: n * frame_bytes], np.uint8).reshape(n, height, width, 3).copy()


@dataclass
class _Stream:
    """One output stream of a ``framecrc`` listing: its header values and packet totals."""

    header: dict[str, str] = field(default_factory=dict)
    packets: int = 0
    duration: int = 0
    """Sum of packet durations, in the stream's time base."""
    size: int = 0
    """Sum of packet sizes in bytes."""
    durations: list[int] = field(default_factory=list)

    @property
    def time_base(self) -> Fraction:
        return Fraction(self.header.get("tb", "0/1"))


def _framecrc(text: str) -> dict[int, _Stream]:
    """Parse ffmpeg's ``framecrc`` listing: ``#key N: value`` headers, ``N, dts, pts, duration, size, crc``
    packet lines."""
    streams: dict[int, _Stream] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            name, _, index = key.rpartition(" ")
            if sep and name and index.isdigit():
                streams.setdefault(int(index), _Stream()).header[name] = value.strip()
        elif line and line[0].isdigit():
            fields = [f.strip() for f in line.split(",")]
            st = streams.setdefault(int(fields[0]), _Stream())
            st.packets += 1
            st.duration += int(fields[3])
            st.size += int(fields[4])
            st.durations.append(int(fields[3]))
    return streams


_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
"""``profile_idc`` values whose sequence parameter set carries chroma format and bit depth (H.264 7.3.2.1.1)."""


class _Bits:
    """Big-endian bit reader with unsigned Exp-Golomb codes (H.264 9.1)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]  # IndexError past the end: a truncated parameter set
        self.pos += 1
        return (byte >> (7 - ((self.pos - 1) & 7))) & 1

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.bits(zeros)


def h264_pix_fmt(annexb: bytes) -> str | None:
    """Pixel format (ffmpeg's name) from the first sequence parameter set in an H.264 Annex B stream:
    chroma format and luma bit depth; ``None`` when there is no readable one."""
    for nal in annexb.split(b"\x00\x00\x01")[1:]:
        if not nal or nal[0] & 0x1F != 7:  # 7: sequence parameter set
            continue
        rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")  # drop emulation prevention bytes
        try:
            bits = _Bits(rbsp)
            profile = bits.bits(8)
            bits.bits(16)  # constraint flags, level
            bits.ue()  # seq_parameter_set_id
            chroma, depth = 1, 8
            if profile in _H264_HIGH_PROFILES:
                chroma = bits.ue()
                if chroma == 3:
                    bits.bit()  # separate_colour_plane_flag
                depth = 8 + bits.ue()
        except IndexError:
            return None
        base = {0: "gray", 1: "yuv420p", 2: "yuv422p", 3: "yuv444p"}.get(chroma)
        if base is None:
            return None
        return base if depth == 8 else f"{base}{depth}le"
    return None


def probe(path: str | os.PathLike, *, count: bool = True, decode_audio: bool = True) -> VideoInfo:
    """Describe a video file. ``count`` decodes the video to count frames (else 0);
    ``decode_audio`` decodes the audio to count samples (else ``audio_samples`` is None)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    # output streams: 0:v:0 copied, 0:a:0 copied (codec) and 0:a:0 decoded to s16 PCM (channels, samples;
    # one packet is enough for the channels when the samples are not wanted)
    args = ["-map", "0:v:0?", "-map", "0:a:0?", "-map", "0:a:0?", "-c", "copy", "-c:a:1", "pcm_s16le"]
    if not decode_audio:
        args += ["-frames:a:1", "1"]
    listing = _run(path, [*args, "-f", "framecrc", "-"], "read the streams").decode("utf-8", "replace")
    streams = _framecrc(listing)
    video = next((st for st in streams.values() if st.header.get("media_type") == "video"), None)
    if video is None or "x" not in video.header.get("dimensions", ""):
        raise InputError(f"no video stream in {path}")
    width, height = (int(v) for v in video.header["dimensions"].split("x"))
    fps = 0.0
    if video.durations and video.time_base and statistics.median(video.durations) > 0:
        fps = float(1 / (video.time_base * Fraction(statistics.median(video.durations))))
    audio = [st for st in streams.values() if st.header.get("media_type") == "audio"]
    copied, pcm = (audio[0], audio[-1]) if len(audio) == 2 else (None, None)
    rate = int(copied.header["sample_rate"]) if copied else None
    channels = samples = None
    if pcm is not None and rate:
        pcm_samples = pcm.duration * pcm.time_base * rate
        if pcm_samples:
            channels = round(pcm.size / (2 * pcm_samples))
        if decode_audio:
            samples = int(pcm_samples)
    codec = video.header.get("codec_id", "")
    pix_fmt = None
    if codec == "h264":
        args = ["-map", "0:v:0", "-frames:v", "1", "-c:v", "copy", "-f", "h264", "-"]
        first = _run(path, args, "read the H.264 parameter set")
        pix_fmt = h264_pix_fmt(first)
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        num_frames=count_frames(path) if count else 0,
        fps=fps,
        video_codec=codec,
        pix_fmt=pix_fmt,
        has_audio=copied is not None,
        audio_codec=copied.header.get("codec_id") if copied else None,
        audio_sample_rate=rate,
        audio_channels=channels,
        audio_samples=samples,
        metadata=read_metadata(path),
    )
