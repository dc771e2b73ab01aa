"""The request body shared by the HTTP routes (WebUI API ``/sadtalker/v1/generate`` and ``/stream``, the
standalone app's ``/sadtalker/v1/stream``): JSON -> validated :class:`GenerationOptions`, with the path and
size checks; every refusal is an :class:`ApiError` carrying the HTTP status.

Inputs ``source`` / ``driven_audio`` / ``ref_video`` / ``ref_pose_video`` as paths inside the allowed folders
(symlinks and ``..`` resolved first), or the same names with ``_base64`` (plain base64 or a ``data:`` URL, at
most 200 MB decoded, written into a private folder). Every other :class:`GenerationOptions` field by name;
``output`` and ``extra`` are refused; ``face_restoration`` (a WebUI restorer name) and ``return`` (``path``,
``base64`` or ``both``) are taken out. Statuses: 400 bad JSON / base64 / path, 403 a path outside the
allowed folders, 404 a missing file, 413 too large, 422 an invalid option or a ``source_base64`` that is
neither a picture nor a video. The body is read as a plain dict (no pydantic model), so pydantic 1 and 2
both work.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import InputError
from .form import MAX_INLINE_BYTES, InlineDataError, decode_inline, sniff_suffix
from .options import GenerationOptions

FILE_FIELDS = ("source", "driven_audio", "ref_video", "ref_pose_video")
RETURN_MODES = ("path", "base64", "both")
MAX_BASE64_BYTES = MAX_INLINE_BYTES
NO_RESTORER = "None"
"""``face_restoration`` when none is asked for (the WebUI's own name for "no restorer")."""


class ApiError(Exception):
    """An error answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_allowed(value: str, roots: Iterable[Path], field: str) -> str:
    """The resolved path of ``value`` when it is an existing file inside one of ``roots``; else ApiError.

    Symlinks are resolved first, so neither ``..`` nor a link can lead outside.
    """
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, f"{field}: expected a file path string")
    if "\x00" in value:
        raise ApiError(400, f"{field}: invalid path")
    try:
        resolved = Path(value).expanduser().resolve()
    except (OSError, RuntimeError) as exc:
        raise ApiError(400, f"{field}: invalid path ({exc})") from exc
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise ApiError(
            403,
            f"{field}: {value} is outside the folders the SadTalker API may read (setting 'sadtalker_api_allowed_dirs')",
        )
    if not resolved.is_file():
        raise ApiError(404, f"{field}: file not found: {value}")
    return str(resolved)


INLINE_STATUS = {"type": 422, "url": 400, "size": 413, "invalid": 400, "empty": 400}
"""HTTP status for each kind of unusable ``*_base64`` value (:class:`~sadtalker_ext.form.InlineDataError`)."""


def decode_base64(text: Any, field: str) -> bytes:
    """Plain base64 or a ``data:<mime>;base64,`` URL -> bytes; ApiError (400, 413 or 422) when unusable."""
    try:
        return decode_inline(text, f"{field}_base64", MAX_BASE64_BYTES)
    except InlineDataError as exc:
        raise ApiError(INLINE_STATUS[exc.kind], str(exc)) from exc


VIDEO_SUFFIXES = (".mp4", ".webm", ".avi")


def check_picture(path: Path, field: str) -> None:
    """ApiError 422 unless the decoded ``source`` is a picture Pillow recognises or a video container.

    Only the header is read (the pipeline checks the size and decodes it later); this answers a garbage
    upload at once, before the request waits for the GPU queue.
    """
    if path.suffix in VIDEO_SUFFIXES:
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path):
                pass
    except Image.DecompressionBombError:
        return  # a real picture, too large: the pipeline's message says the size and the limit
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        size = path.stat().st_size
        raise ApiError(
            422,
            f"{field}_base64: the decoded data ({size} bytes) is not a picture (png, jpg, webp, bmp, gif, ...) "
            "or a video; send the picture file's bytes base64-encoded",
        ) from exc


def parse_request(body: Any, roots: list[Path], tmp: Path) -> tuple[GenerationOptions, str, str]:
    """Request JSON -> (validated options, face restorer name, return mode). Base64 inputs are written into ``tmp``."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    values = dict(body)
    restorer = str(values.pop("face_restoration", None) or NO_RESTORER)
    mode = values.pop("return", "path")
    if mode not in RETURN_MODES:
        raise ApiError(422, f"return must be one of {', '.join(RETURN_MODES)}; got {mode!r}")
    if "output" in values:
        raise ApiError(
            422, "output: not accepted by the API; videos are saved in the SadTalker output folder"
        )
    if "extra" in values:
        raise ApiError(422, "extra: not accepted by the API")
    for field in FILE_FIELDS:
        encoded = values.pop(f"{field}_base64", None)
        given = values.get(field)
        if encoded is not None and given not in (None, ""):
            raise ApiError(422, f"give either {field} or {field}_base64, not both")
        if encoded is not None:
            data = decode_base64(encoded, field)
            path = tmp / f"api_{field}{sniff_suffix(data, field)}"
            path.write_bytes(data)
            values[field] = str(path)
        elif given not in (None, ""):
            values[field] = check_allowed(given, roots, field)
    if not values.get("source"):
        raise ApiError(422, "source: give a picture as source (a path) or source_base64")
    values["extra"] = {"front_end": "api", "face_restoration": restorer}
    try:
        options = GenerationOptions.from_mapping(values)
    except InputError as exc:
        raise ApiError(422, str(exc)) from exc
    if "source_base64" in body:  # after the options: their messages come first
        check_picture(Path(options.source), "source")
    return options, restorer, mode
