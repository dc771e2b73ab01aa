"""Video output: streaming H.264/AAC writer and a probe helper (bundled ffmpeg of imageio-ffmpeg)."""

from .probe import VideoInfo, count_frames, iter_frames, probe, read_audio, read_frames, read_metadata
from .writer import VideoWriter, even_size, partial_path, sidecar_path

__all__ = [
    "VideoInfo",
    "VideoWriter",
    "count_frames",
    "even_size",
    "iter_frames",
    "partial_path",
    "probe",
    "read_audio",
    "read_frames",
    "read_metadata",
    "sidecar_path",
]
