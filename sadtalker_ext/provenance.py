"""What a video was made from: content digests of its input files, recorded in its metadata and sidecar.

A batch run that finds an existing video whose sidecar names the same input digests and the same settings
can skip that job (:mod:`sadtalker_ext.cluster.resume`); paths alone would not do, because a file may be
replaced under the same name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

from .errors import InputError

INPUT_FIELDS = ("source", "driven_audio", "ref_video", "ref_pose_video")
"""Options naming an input file (:class:`.options.GenerationOptions` fields)."""
PATH_FIELDS = (*INPUT_FIELDS, "output")
"""Options naming a file: where, not what (left out when two settings are compared)."""
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes; :class:`InputError` when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """Hex sha256 of ``data`` (same value as :func:`file_sha256` of a file holding it)."""
    return hashlib.sha256(data).hexdigest()


def input_digests(options: Any) -> dict[str, str]:
    """``{field: sha256}`` for every input file the options name (``source``, ``driven_audio``,
    ``ref_video``, ``ref_pose_video``; fields left empty are absent)."""
    return {name: file_sha256(path) for name in INPUT_FIELDS if (path := getattr(options, name, None))}


def settings_without_paths(options: Mapping[str, Any]) -> dict[str, Any]:
    """An options dict (``GenerationOptions.to_dict()`` or a sidecar's ``options``) without the fields
    naming files and without ``extra`` (front-end notes): the settings that decide the frames."""
    return {k: v for k, v in options.items() if k not in PATH_FIELDS and k != "extra"}
