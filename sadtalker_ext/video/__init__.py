"""Video output: streaming H.264/AAC writer and a probe helper (bundled ffmpeg of imageio-ffmpeg)."""

from .probe import VideoInfo, probe, read_audio, read_frames
from .writer import VideoWriter, even_size, partial_path, sidecar_path

__all__ = [
    "VideoInfo",
    "VideoWriter",
    "even_size",
    "partial_path",
    "probe",
    "read_audio",
    "read_frames",
    "sidecar_path",
]
