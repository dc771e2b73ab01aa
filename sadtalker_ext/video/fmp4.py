"""Fragmented MP4 (fMP4) boxes: split a byte stream into whole segments, read what each fragment holds.

An fMP4 as :class:`.writer.VideoWriter` writes it (``fragmented=True``) is, in order: the init segment
(``ftyp`` + ``moov``, the ``moov`` holding no samples), then one fragment per second of video (``moof`` +
``mdat``; the video starts on a keyframe in every fragment, the audio of that second interleaved in the
same fragment), then an ``mfra`` index. Box layout: ISO/IEC 14496-12 (32-bit size, type; size 1: a 64-bit
size follows the type).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

_NON_SYNC = 0x00010000
"""``sample_is_non_sync_sample`` bit of ISO sample flags."""


def iter_boxes(
    data: bytes | memoryview, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int, int]]:
    """``(type, offset of the box, offset after it)`` of each WHOLE box in ``data[start:end]``, in order.

    Stops at a box that is cut short (its size says more bytes than there are)."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:  # "to the end of the file": only whole once the stream has ended
            return
        if size < header or pos + size > end:
            return
        yield bytes(kind), pos, pos + size
        pos += size


class SegmentSplitter:
    """Bytes as they come from the muxer -> whole segments: the init segment (``ftyp`` + ``moov``), then
    each fragment (``moof`` + its ``mdat``), then anything else box by box (``mfra``)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._held = 0
        """Bytes at the front of the buffer that are whole boxes waiting for their partner box."""

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; returns the segments they completed (maybe none)."""
        self._buf += data
        out: list[bytes] = []
        cut = 0
        pending: bytes | None = None  # type of the box waiting for its partner (ftyp -> moov, moof -> mdat)
        for kind, _start, stop in iter_boxes(self._buf):
            if kind in (b"ftyp", b"moof", b"styp"):
                pending = kind
                continue
            if pending is not None and kind not in (b"moov", b"mdat"):
                continue  # e.g. free / sidx between the halves: stay with them
            out.append(bytes(self._buf[cut:stop]))
            cut = stop
            pending = None
        if cut:
            del self._buf[:cut]
        return out

    def flush(self) -> bytes:
        """What is left once the stream has ended (normally nothing)."""
        rest, self._buf = bytes(self._buf), bytearray()
        return rest


@dataclass(frozen=True)
class TrackRun:
    """One track's samples in one fragment."""

    track_id: int
    samples: int
    first_is_sync: bool
    """Whether the first sample is a sync sample (for video: a keyframe)."""
    base_decode_time: int | None
    """``tfdt`` decode time of the first sample, in the track's timescale."""


@dataclass(frozen=True)
class Fragment:
    """One ``moof`` (+ ``mdat``): where it is in the file and its track runs."""

    offset: int
    end: int
    """Offset after its ``mdat``."""
    tracks: tuple[TrackRun, ...]

    def track(self, track_id: int) -> TrackRun | None:
        return next((t for t in self.tracks if t.track_id == track_id), None)


def _full_box(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """``(version, flags)`` of the full box whose content starts at ``pos``."""
    word = struct.unpack_from(">I", data, pos)[0]
    return word >> 24, word & 0xFFFFFF


def _traf(data: bytes | memoryview, start: int, end: int, trex_flags: dict[int, int]) -> TrackRun:
    track_id, default_flags, samples, first_flags, decode_time = 0, None, 0, None, None
    for kind, pos, _stop in iter_boxes(data, start, end):
        body = pos + 8
        if kind == b"tfhd":
            _, flags = _full_box(data, body)
            (track_id,) = struct.unpack_from(">I", data, body + 4)
            at = body + 8
            for bit, width in ((0x1, 8), (0x2, 4), (0x8, 4), (0x10, 4)):  # base offset, desc, duration, size
                if flags & bit:
                    at += width
            if flags & 0x20:
                (default_flags,) = struct.unpack_from(">I", data, at)
        elif kind == b"tfdt":
            version, _ = _full_box(data, body)
            decode_time = struct.unpack_from(">Q" if version == 1 else ">I", data, body + 4)[0]
        elif kind == b"trun":
            _, flags = _full_box(data, body)
            (count,) = struct.unpack_from(">I", data, body + 4)
            at = body + 8 + (4 if flags & 0x1 else 0)
            if samples == 0:  # the first sample of the fragment
                if flags & 0x4:
                    (first_flags,) = struct.unpack_from(">I", data, at)
                elif flags & 0x400 and count:
                    at += 4
                    at += 4 if flags & 0x100 else 0
                    at += 4 if flags & 0x200 else 0
                    (first_flags,) = struct.unpack_from(">I", data, at)
            samples += count
    if first_flags is None:
        first_flags = default_flags if default_flags is not None else trex_flags.get(track_id, 0)
    return TrackRun(track_id, samples, not first_flags & _NON_SYNC, decode_time)


def _trex_flags(data: bytes | memoryview, moov_start: int, moov_end: int) -> dict[int, int]:
    """``track_id -> default_sample_flags`` of the ``moov``'s ``mvex/trex`` boxes."""
    out: dict[int, int] = {}
    for kind, pos, stop in iter_boxes(data, moov_start + 8, moov_end):
        if kind != b"mvex":
            continue
        for sub, spos, _ in iter_boxes(data, pos + 8, stop):
            if sub == b"trex":
                track_id, _desc, _dur, _size, flags = struct.unpack_from(">5I", data, spos + 12)
                out[track_id] = flags
    return out


def read_fragments(data: bytes | memoryview) -> list[Fragment]:
    """Every whole fragment of an fMP4 held in ``data`` (a file's bytes, or the bytes received so far)."""
    trex: dict[int, int] = {}
    frags: list[Fragment] = []
    moof: tuple[int, list[TrackRun]] | None = None
    for kind, pos, stop in iter_boxes(data):
        if kind == b"moov":
            trex = _trex_flags(data, pos, stop)
        elif kind == b"moof":
            runs = [
                _traf(data, tpos + 8, tstop, trex)
                for tkind, tpos, tstop in iter_boxes(data, pos + 8, stop)
                if tkind == b"traf"
            ]
            moof = (pos, runs)
        elif kind == b"mdat" and moof is not None:
            frags.append(Fragment(moof[0], stop, tuple(moof[1])))
            moof = None
    return frags


def top_level_boxes(data: bytes | memoryview) -> list[bytes]:
    """The types of the whole top-level boxes in ``data``, in order (``[b'ftyp', b'moov', b'moof', ...]``)."""
    return [kind for kind, _, _ in iter_boxes(data)]
