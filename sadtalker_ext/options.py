"""The one validated options object shared by the CLI, the standalone app, the WebUI tab and the API."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import InputError
from .preprocess.mode import MODE_NAMES

PREPROCESS_MODES = MODE_NAMES
"""The preprocess mode names (:class:`.preprocess.mode.PreprocessMode`), as front ends list them."""
REF_MODES = ("pose", "blink", "pose+blink", "all")
FACE_DETECTORS = ("retinaface", "dlib")
ENHANCERS = ("none", "gfpgan")
"""The face enhancers of this extension (names are accepted in any case: ``GFPGAN``, ``None``)."""
IMPLEMENTED_ENHANCERS = ENHANCERS
UNSUPPORTED_ENHANCERS = ("restoreformer",)
"""Official SadTalker enhancers this extension does not have (refused with :func:`enhancer_error`)."""
BACKGROUND_ENHANCERS = ("none", "realesrgan")
ENHANCER_MODES = ("auto", "official", "crop")
"""How ``enhancer='gfpgan'`` is arranged: 'official' = GFPGANer.enhance on every final frame (RetinaFace,
FFHQ alignment, ParseNet paste mask, 2x output; :mod:`.enhance_paste`); 'crop' = the rendered face crops,
same size (:class:`.enhance.FaceEnhancer`); 'auto' = official when its weight files are present, else crop."""
SIZES = (256, 512)
POSE_STYLES = range(46)
MAX_BATCH = 64
MAX_AUDIO_SECONDS = 600.0
"""Default of ``max_audio_seconds``: the longest recording (or idle length) a generation accepts."""
RAISE_LIMIT_HINT = (
    "raise the limit with the option max_audio_seconds (command line: --max_audio_seconds S; "
    "WebUI: Settings > SadTalker > Maximum audio length; app: 'Maximum audio length (s)')"
)
"""How the user raises ``max_audio_seconds`` in each front end (part of the too-long messages)."""


def _angles(value: Any, name: str) -> tuple[float, ...] | None:
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, str):
        parts = value.replace(",", " ").split()
    elif isinstance(value, int | float):
        parts = [value]
    else:
        parts = list(value)
    try:
        out = tuple(float(p) for p in parts)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected numbers in degrees (e.g. '0 20 -10'), got {value!r}") from exc
    if not out:
        return None
    if any(not math.isfinite(a) or abs(a) > 90 for a in out):
        raise InputError(f"{name}: angles must be finite and within [-90, 90] degrees, got {out}")
    return out


def enhancer_error(value: Any) -> str | None:
    """Why ``value`` is not a face enhancer name (None when it is one, in any case)."""
    if isinstance(value, str) and value.lower() in ENHANCERS:
        return None
    available = f"available: {', '.join(ENHANCERS)} (and the WebUI's own face restorers in the WebUI tab)"
    if isinstance(value, str) and value.lower() in UNSUPPORTED_ENHANCERS:
        return f"enhancer {value!r} is not supported; {available}"
    return f"enhancer {value!r} is unknown; {available}"


@dataclass(frozen=True)
class GenerationOptions:
    """Everything a generation needs besides model folders, device and dtype.

    Paths are strings as given by the user; front ends check that they exist before running.
    """

    source: str
    """Picture (png/jpg/webp/...) or a video whose first frame is used."""
    driven_audio: str | None = None
    """Speech recording; ``None`` with ``idle_seconds`` for idle (silent) motion."""
    idle_seconds: float | None = None
    preprocess: str = "crop"
    still: bool = False
    pose_style: int = 0
    expression_scale: float = 1.0
    size: int = 256
    batch_size: int = 2
    use_blink: bool = True
    seed: int | None = None
    """Blink schedule and pose noise seed; ``None`` picks one and records it in the outputs."""
    ref_video: str | None = None
    ref_mode: str = "pose"
    ref_pose_video: str | None = None
    """ref_mode 'pose+blink' with two videos: the head pose from this one, the blinks from ``ref_video``
    (official ``--ref_pose`` and ``--ref_eyeblink`` naming different videos)."""
    input_yaw: tuple[float, ...] | None = None
    input_pitch: tuple[float, ...] | None = None
    input_roll: tuple[float, ...] | None = None
    face_index: int = 0
    face_detector: str = "retinaface"
    enhancer: str = "none"
    background_enhancer: str = "none"
    enhancer_mode: str = "auto"
    """:data:`ENHANCER_MODES`; only used with ``enhancer='gfpgan'``."""
    fps: int = 25
    output: str | None = None
    max_audio_seconds: float = MAX_AUDIO_SECONDS
    """Longest recording (and idle length) accepted, in seconds; longer audio is refused before any model
    loads (CLI ``--max_audio_seconds``, WebUI setting 'Maximum audio length')."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Front-end specific notes kept in the metadata (never read by the pipeline)."""

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise InputError(msg)

        # Loosely typed values from Python callers (``batch_size="2"``) get the same coercion and the same
        # field-named errors as the CLI, the form and the API (:meth:`from_mapping`).
        for f in fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(f.name, value)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        if not self.source:
            fail("source: a picture (or video) is required")
        if self.driven_audio is None and self.idle_seconds is None and self.ref_mode != "all":
            fail("driven_audio: give a speech recording, or idle_seconds for idle mode")
        if not (math.isfinite(self.max_audio_seconds) and self.max_audio_seconds > 0):
            fail(f"max_audio_seconds must be a positive number of seconds; got {self.max_audio_seconds}")
        if self.idle_seconds is not None and not (0 < float(self.idle_seconds) <= self.max_audio_seconds):
            fail(
                f"idle_seconds must be in (0, {self.max_audio_seconds:g}], got {self.idle_seconds}; "
                f"for longer idle videos {RAISE_LIMIT_HINT}"
            )
        if self.preprocess not in PREPROCESS_MODES:
            fail(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}; got {self.preprocess!r}")
        if self.pose_style not in POSE_STYLES:
            fail(f"pose_style must be an integer from 0 to 45; got {self.pose_style!r}")
        if not (math.isfinite(self.expression_scale) and 0.0 <= self.expression_scale <= 5.0):
            fail(f"expression_scale must be within [0, 5]; got {self.expression_scale}")
        if self.size not in SIZES:
            fail(f"size must be 256 or 512; got {self.size!r}")
        if not (1 <= self.batch_size <= MAX_BATCH):
            fail(f"batch_size must be from 1 to {MAX_BATCH}; got {self.batch_size}")
        if self.seed is not None and not (0 <= self.seed < 2**32):
            fail(f"seed must be within [0, 2**32); got {self.seed}")
        if self.ref_mode not in REF_MODES:
            fail(f"ref_mode must be one of {', '.join(REF_MODES)}; got {self.ref_mode!r}")
        if self.ref_mode == "all" and self.driven_audio is None and self.ref_video is None:
            fail("ref_mode 'all' needs ref_video")
        if self.ref_pose_video is not None and (self.ref_video is None or self.ref_mode != "pose+blink"):
            fail(
                "ref_pose_video (a separate head-pose video) needs ref_video (the eye-blink video) and "
                "ref_mode 'pose+blink'"
            )
        if self.face_index < 0:
            fail(f"face_index must be >= 0; got {self.face_index}")
        if self.face_detector not in FACE_DETECTORS:
            fail(f"face_detector must be one of {', '.join(FACE_DETECTORS)}; got {self.face_detector!r}")
        if (problem := enhancer_error(self.enhancer)) is not None:
            fail(problem)
        object.__setattr__(self, "enhancer", self.enhancer.lower())  # 'GFPGAN', 'None' as the official
        if self.background_enhancer not in BACKGROUND_ENHANCERS:
            fail(
                f"background_enhancer must be one of {', '.join(BACKGROUND_ENHANCERS)}; "
                f"got {self.background_enhancer!r}"
            )
        if self.enhancer_mode not in ENHANCER_MODES:
            fail(f"enhancer_mode must be one of {', '.join(ENHANCER_MODES)}; got {self.enhancer_mode!r}")
        if self.fps != 25:
            fail(f"fps must be 25 (the motion models are trained at 25 fps); got {self.fps}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GenerationOptions:
        """Build from loosely typed input (JSON, form fields, CLI); unknown names are refused."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(f"unknown option(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}")
        kw: dict[str, Any] = {}
        for name, value in values.items():
            kw[name] = _coerce(name, value)
        if "source" not in kw:
            raise InputError("source: a picture (or video) is required")
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for metadata, sidecar files and infotext)."""
        out = dataclasses.asdict(self)
        for k in ("input_yaw", "input_pitch", "input_roll"):
            if out[k] is not None:
                out[k] = list(out[k])
        return out

    def replace(self, **changes: Any) -> GenerationOptions:
        return dataclasses.replace(self, **changes)


_INTS = {"pose_style", "size", "batch_size", "seed", "face_index", "fps"}
_FLOATS = {"expression_scale", "idle_seconds", "max_audio_seconds"}
_BOOLS = {"still", "use_blink"}
_OPTIONAL_STR = {"driven_audio", "ref_video", "ref_pose_video", "output"}


def _coerce(name: str, value: Any) -> Any:
    try:
        if name in _INTS:
            if value is None or value == "":
                return None if name == "seed" else _raise(name, value, "a whole number")
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                return _raise(name, value, "a whole number")
            try:
                return int(value)
            except (TypeError, ValueError, OverflowError):
                return _raise(name, value, "a whole number")
        if name in _FLOATS:
            if value is None or value == "":
                return None if name == "idle_seconds" else _raise(name, value, "a number")
            try:
                return float(value)
            except (TypeError, ValueError):
                return _raise(name, value, "a number")
        if name in _BOOLS:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                return _raise(name, value)
            return bool(value)
        if name in ("input_yaw", "input_pitch", "input_roll"):
            return _angles(value, name)
        if name in _OPTIONAL_STR:
            return None if value in (None, "") else str(value)
        if name == "extra":
            return dict(value)
        return value if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: cannot use {value!r} ({exc})") from exc


def _raise(name: str, value: Any, expected: str = "") -> Any:
    if expected:
        raise InputError(f"{name} must be {expected}; got {value!r}")
    raise InputError(f"{name}: invalid value {value!r}")
