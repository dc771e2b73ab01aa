"""The "SadTalker" section of the WebUI Settings tab, and a typed snapshot of its values."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..options import (
    DTYPES,
    FACE_DETECTORS,
    MAX_AUDIO_SECONDS,
    PREPROCESS_MODES,
    SIZES,
    option_default,
    option_spec,
)
from ..precision import DTYPE_HELP
from .host import Host

SECTION = ("sadtalker", "SadTalker")
_BATCH = option_spec("batch_size")
NO_RESTORER = "None"


@dataclass(frozen=True)
class Spec:
    """One option: key (``shared.opts.<key>``), default, label, gradio component name and its arguments."""

    key: str
    default: Any
    label: str
    component: str
    args: dict[str, Any] | None = None
    info: str = ""
    restrict_api: bool = False
    """Not settable through ``/sdapi/v1/options`` (folders: an API client must not widen what it may read)."""


SPECS: tuple[Spec, ...] = (
    Spec("sadtalker_result_dir", "", "Output folder for SadTalker videos", "Textbox",
         info="empty: SadTalker inside the WebUI's outputs folder (outputs/SadTalker); relative paths start at the WebUI folder", restrict_api=True),
    Spec("sadtalker_date_subfolder", True, "Save videos into a dated subfolder (YYYY-MM-DD)", "Checkbox"),
    Spec("sadtalker_keep_models_loaded", True, "Keep SadTalker models in memory between generations", "Checkbox",
         info="off: models are unloaded after every generation (frees VRAM, next run loads again)"),
    Spec("sadtalker_dtype", "float32", "SadTalker precision", "Radio", {"choices": list(DTYPES)},
         info=DTYPE_HELP),
    Spec("sadtalker_cpu_winograd", True, "Fast convolutions on the CPU (Winograd)", "Checkbox",
         info="CPU, float32: the renderer's wide 3x3 convolutions with 4x fewer multiplies; no effect on a GPU"),
    Spec("sadtalker_default_size", option_default("size"), "Default face renderer size", "Radio", {"choices": list(SIZES)}),
    Spec("sadtalker_default_preprocess", option_default("preprocess"), "Default preprocess mode", "Dropdown",
         {"choices": list(PREPROCESS_MODES)}),
    Spec("sadtalker_default_face_detector", option_default("face_detector"), "Default face detector", "Dropdown",
         {"choices": list(FACE_DETECTORS)}),
    Spec("sadtalker_default_restorer", NO_RESTORER, "Default face restoration (WebUI face restorers)", "Dropdown",
         None, info="GFPGAN / CodeFormer from the WebUI, applied to every frame"),
    Spec("sadtalker_default_still", option_default("still"), "Still mode by default", "Checkbox"),
    Spec("sadtalker_default_batch_size", option_default("batch_size"), "Default batch size (frames rendered at once)", "Slider",
         {"minimum": _BATCH.minimum, "maximum": _BATCH.maximum, "step": _BATCH.step}),
    Spec("sadtalker_max_audio_seconds", MAX_AUDIO_SECONDS, "Maximum audio length (seconds)", "Number",
         info="longer recordings and idle lengths are refused before the models load; the API field max_audio_seconds overrides it per request"),
    Spec("sadtalker_live_preview", True, "Show the latest rendered frame as live preview", "Checkbox",
         info="also needs the WebUI's 'Show live previews' setting"),
    Spec("sadtalker_play_while_generating", True, "'Play while generating' ticked by default", "Checkbox",
         info="the tab plays the video while it is made (fragmented MP4 streamed to the page; needs a browser with Media Source Extensions and H.264)"),
    Spec("sadtalker_api_allowed_dirs", "", "Folders the SadTalker API may read input files from", "Textbox",
         info="besides the WebUI outputs folder; one per line or separated by ';'", restrict_api=True),
)  # fmt: skip
SPEC_BY_KEY = {s.key: s for s in SPECS}


def on_ui_settings(host: Host) -> None:
    """Register every :data:`SPECS` option in the section ``SadTalker`` (the ``on_ui_settings`` callback)."""
    import gradio as gr

    for spec in SPECS:
        component = getattr(gr, spec.component)
        if spec.key == "sadtalker_default_restorer":

            def restorer_args(_host: Host = host) -> dict[str, Any]:
                return {"choices": [NO_RESTORER, *_host.face_restorer_names()]}

            args: Any = restorer_args
        elif spec.component == "Textbox":
            args = {"interactive": True, **(spec.args or {})}
        else:
            args = spec.args
        info = host.option_info(
            spec.default, spec.label, component, args, section=SECTION, restrict_api=spec.restrict_api
        )
        if spec.info and hasattr(info, "info"):
            info = info.info(spec.info)
        host.add_option(spec.key, info)


@dataclass(frozen=True)
class WebUISettings:
    """The values of the SadTalker section, read once per generation."""

    result_dir: str
    date_subfolder: bool
    keep_models_loaded: bool
    dtype: str
    cpu_winograd: bool
    default_size: int
    default_preprocess: str
    default_face_detector: str
    default_restorer: str
    default_still: bool
    default_batch_size: int
    live_preview: bool
    api_allowed_dirs: tuple[str, ...]
    max_audio_seconds: float = MAX_AUDIO_SECONDS
    play_while_generating: bool = True

    @classmethod
    def read(cls, host: Host) -> WebUISettings:
        """Current values; a value edited into config.json by hand that is not valid falls back to the default."""

        def get(key: str) -> Any:
            return host.opt(key, SPEC_BY_KEY[key].default)

        def choice(key: str, allowed: Any) -> Any:
            value = get(key)
            with contextlib.suppress(TypeError, ValueError):
                value = type(SPEC_BY_KEY[key].default)(value)
            return value if value in allowed else SPEC_BY_KEY[key].default

        try:
            batch = int(max(_BATCH.minimum, min(_BATCH.maximum, int(get("sadtalker_default_batch_size")))))
        except (TypeError, ValueError):
            batch = SPEC_BY_KEY["sadtalker_default_batch_size"].default
        try:
            max_audio = float(get("sadtalker_max_audio_seconds"))
        except (TypeError, ValueError):
            max_audio = MAX_AUDIO_SECONDS
        if not (math.isfinite(max_audio) and max_audio > 0):
            max_audio = MAX_AUDIO_SECONDS
        return cls(
            result_dir=str(get("sadtalker_result_dir") or ""),
            date_subfolder=bool(get("sadtalker_date_subfolder")),
            keep_models_loaded=bool(get("sadtalker_keep_models_loaded")),
            dtype=choice("sadtalker_dtype", DTYPES),
            cpu_winograd=bool(get("sadtalker_cpu_winograd")),
            default_size=choice("sadtalker_default_size", SIZES),
            default_preprocess=choice("sadtalker_default_preprocess", PREPROCESS_MODES),
            default_face_detector=choice("sadtalker_default_face_detector", FACE_DETECTORS),
            default_restorer=str(get("sadtalker_default_restorer") or NO_RESTORER),
            default_still=bool(get("sadtalker_default_still")),
            default_batch_size=batch,
            live_preview=bool(get("sadtalker_live_preview")),
            api_allowed_dirs=split_dirs(str(get("sadtalker_api_allowed_dirs") or "")),
            max_audio_seconds=max_audio,
            play_while_generating=bool(get("sadtalker_play_while_generating")),
        )


def split_dirs(text: str) -> tuple[str, ...]:
    """``"a;b\\nc"`` -> ``("a", "b", "c")`` (``os.pathsep`` also separates)."""
    for sep in ("\n", os.pathsep):
        text = text.replace(sep, ";")
    return tuple(p.strip() for p in text.split(";") if p.strip())


def result_root(host: Host, settings: WebUISettings) -> Path:
    """The SadTalker output folder (without the date): the setting, else ``<outputs>/SadTalker``."""
    if settings.result_dir:
        return host.absolute(settings.result_dir)
    return host.outputs_root() / "SadTalker"
