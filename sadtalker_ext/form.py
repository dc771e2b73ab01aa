"""The generation form shared by the standalone app and the WebUI tab: its fields, its components (built
from the option table, :class:`~sadtalker_ext.options.OptionSpec`), its values -> :class:`GenerationOptions`,
and inline (base64) uploads, which the app and the WebUI's API both accept (:func:`decode_inline`,
:func:`sniff_suffix`).

No gradio and no host import: the front ends pass their ``gradio`` module to :func:`component`, and plain
values back (file components may give a path string, a ``{'name'|'path': ...}`` dict or a tempfile wrapper).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError
from .options import GROUPS, OPTION_SPECS, GenerationOptions, option_default, value_type

FORM_FIELDS = (
    "source", "driven_audio", "idle_mode", "idle_seconds", "ref_video", "ref_mode", "preprocess", "still",
    "pose_style", "expression_scale", "size", "batch_size", "use_blink", "seed", "input_yaw", "input_pitch",
    "input_roll", "face_detector", "face_index", "enhancer", "background_enhancer",
)  # fmt: skip
"""The generation fields both forms have, in the order their values reach the handlers (the app adds
``max_audio_seconds``, the WebUI tab its host face ``restorer``)."""

FORM_VALUES: dict[str, Any] = {
    "idle_seconds": 5,
    "seed": -1,
    "input_yaw": "",
    "input_pitch": "",
    "input_roll": "",
}
"""What a form shows where the option's default is ``None`` (seed -1: random; idle length 5 s)."""

_WIDGETS = {
    "slider": "Slider", "radio": "Radio", "dropdown": "Dropdown", "checkbox": "Checkbox", "number": "Number",
    "text": "Textbox",
}  # fmt: skip


def form_fields(group: str) -> tuple[str, ...]:
    """The option fields of :data:`FORM_FIELDS` in ``group`` (one of :data:`~sadtalker_ext.options.GROUPS`)
    that the forms show as components built by :func:`component`, in form order."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}; got {group!r}")
    return tuple(
        n
        for n in FORM_FIELDS
        if n in OPTION_SPECS and OPTION_SPECS[n].group == group and OPTION_SPECS[n].widget
    )


def component_args(name: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """``(gradio class name, keyword arguments)`` of field ``name``'s form component, from its
    :class:`~sadtalker_ext.options.OptionSpec`: label, value (the option's default, else :data:`FORM_VALUES`),
    slider bounds and step, choices; ``overrides`` (``value=``, ``elem_id=``, ...) win."""
    spec = OPTION_SPECS[name]
    if not spec.widget:
        raise ValueError(f"{name} has no form widget in the option table")
    default = option_default(name)
    kwargs: dict[str, Any] = {"label": spec.label, "value": FORM_VALUES.get(name, default)}
    if spec.widget == "slider":
        kwargs.update(minimum=spec.minimum, maximum=spec.maximum, step=spec.step)
    elif spec.widget in ("radio", "dropdown"):
        kwargs["choices"] = list(spec.choices or ())
    elif spec.widget == "number" and value_type(name) is int:
        kwargs["precision"] = 0
    kwargs.update(overrides)
    return _WIDGETS[spec.widget], kwargs


def component(gr: Any, name: str, **overrides: Any) -> Any:
    """Field ``name``'s form component made with the ``gradio`` module ``gr`` (see :func:`component_args`)."""
    kind, kwargs = component_args(name, **overrides)
    return getattr(gr, kind)(**kwargs)


MAX_INLINE_BYTES = 200 << 20
"""Largest inline (base64) upload the app and the API accept, decoded."""


class InlineDataError(InputError):
    """Inline (base64) upload data that cannot be used; ``kind``: ``type`` (not a string), ``url`` (a data URL
    that is not base64), ``size`` (too large), ``invalid`` (not base64) or ``empty``."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def decode_inline(text: Any, label: str, max_bytes: int = MAX_INLINE_BYTES) -> bytes:
    """Plain base64 (line breaks allowed) or a ``data:<mime>;base64,`` URL -> bytes; :class:`InlineDataError`
    naming the input by ``label`` otherwise."""
    if not isinstance(text, str) or not text:
        raise InlineDataError(f"{label}: expected base64 data", "type")
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise InlineDataError(f"{label}: only base64 data URLs are accepted", "url")
    text = "".join(text.split())  # line-wrapped output of `base64` is fine
    if len(text) // 4 * 3 > max_bytes:
        raise InlineDataError(f"{label}: larger than {max_bytes >> 20} MB; use a smaller file", "size")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InlineDataError(
            f"{label}: not valid base64 data ({exc}); send the file again", "invalid"
        ) from exc
    if not data:
        raise InlineDataError(f"{label}: the uploaded file is empty", "empty")
    return data


_SIGNATURES = (
    (b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"), (b"ID3", ".mp3"),
    (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"\x1aE\xdf\xa3", ".webm"),
)  # fmt: skip
_RIFF = {b"WEBP": ".webp", b"WAVE": ".wav", b"AVI ": ".avi"}


def sniff_suffix(data: bytes, field: str) -> str:
    """File suffix for uploaded bytes, from their first bytes (png, jpg, gif, bmp, mp3, flac, ogg, webm, webp,
    wav, avi, mp4/mov); unknown data gets the usual suffix of the input ``field`` (``source``: .png,
    ``driven_audio``: .wav, else .mp4)."""
    for magic, suffix in _SIGNATURES:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] in _RIFF:
        return _RIFF[data[8:12]]
    if data[4:8] == b"ftyp":
        return ".mp4"
    return {"source": ".png", "driven_audio": ".wav"}.get(field, ".mp4")


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
