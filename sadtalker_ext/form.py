"""Form values -> :class:`GenerationOptions`, shared by the standalone app and the WebUI tab.

No gradio and no host import: both front ends pass plain values (file components may give a path
string, a ``{'name'|'path': ...}`` dict or a tempfile wrapper).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError
from .options import GenerationOptions

INT_FIELDS = ("size", "pose_style", "batch_size", "face_index")
"""Fields that sliders/number boxes may hand over as floats or strings; converted to ``int``."""


def file_value(value: Any) -> str | None:
    """A gradio file value (path str, ``{'name'|'path': ...}``, tempfile wrapper) -> path or None."""
    if value in (None, ""):
        return None
    if isinstance(value, str | Path):
        return str(value)
    if isinstance(value, Mapping):
        return value.get("path") or value.get("name")
    return getattr(value, "name", None) or getattr(value, "path", None)


def options_from_values(values: Mapping[str, Any], extra: Mapping[str, Any]) -> GenerationOptions:
    """Generation form values -> validated options, with ``extra`` stored as ``options.extra``.

    ``values`` holds :class:`GenerationOptions` field names plus ``idle_mode`` (bool) and ``idle_seconds``.
    Seed empty or < 0: random. Idle mode ignores the recording. Without a reference video its mode is moot.
    Raises :class:`InputError` for a missing picture/recording or a bad value.
    """
    v = dict(values)
    idle = bool(v.pop("idle_mode", False))
    idle_seconds = v.pop("idle_seconds", None)
    seed = v.get("seed")
    try:
        v["seed"] = None if seed in (None, "") or float(seed) < 0 else int(float(seed))
    except (TypeError, ValueError) as exc:
        raise InputError(f"seed: expected a whole number, got {seed!r}") from exc
    v["source"] = file_value(v.get("source"))
    if not v["source"]:
        raise InputError("Upload a face picture first.")
    v["driven_audio"] = None if idle else file_value(v.get("driven_audio"))
    v["idle_seconds"] = idle_seconds if idle else None
    v["ref_video"] = file_value(v.get("ref_video"))
    if v["ref_video"] is None:
        v["ref_mode"] = "pose"
    if not idle and v["driven_audio"] is None and not (v["ref_video"] and v.get("ref_mode") == "all"):
        raise InputError("Upload a speech recording, or tick idle mode and give its length.")
    for key in INT_FIELDS:
        if v.get(key) not in (None, ""):
            v[key] = int(float(v[key]))
    v["extra"] = dict(extra)
    return GenerationOptions.from_mapping(v)
