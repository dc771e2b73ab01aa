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
    spec = OPTION_SPECS[name]
    if any(not (math.isfinite(a) and spec.minimum <= a <= spec.maximum) for a in out):
        raise InputError(
            f"{name}: angles must be finite and within [{spec.minimum:g}, {spec.maximum:g}] degrees, got {out}"
        )
    return out


def enhancer_error(value: Any) -> str | None:
    """Why ``value`` is not a face enhancer name (None when it is one, in any case)."""
    if isinstance(value, str) and value.lower() in ENHANCERS:
        return None
    available = f"available: {', '.join(ENHANCERS)} (and the WebUI's own face restorers in the WebUI tab)"
    if isinstance(value, str) and value.lower() in UNSUPPORTED_ENHANCERS:
        return f"enhancer {value!r} is not supported; {available}"
    return f"enhancer {value!r} is unknown; {available}"


GROUPS = ("inputs", "basic", "motion", "advanced")
"""Option groups, in the order the forms and ``--help`` show them."""

DTYPES = ("float32", "float16", "bfloat16")
"""Compute precisions a pipeline accepts (``SadTalker(dtype=...)``; a setting of the run, not of one video)."""


@dataclass(frozen=True)
class OptionSpec:
    """How one :class:`GenerationOptions` field is described, shown and checked. The CLI's ``--help``, the
    standalone app's form, the WebUI tab's form and the API's validation all read it from here.

    ``minimum``/``maximum``: inclusive bounds (checked in :class:`GenerationOptions`; sliders span them);
    ``choices``: the allowed values (radios, dropdowns, CLI ``choices``); ``step``: slider step;
    ``widget``: how a form shows it (``slider``, ``radio``, ``dropdown``, ``checkbox``, ``number``, ``text``;
    empty: not a form field of its own); ``cli``: whether the CLI has a flag of this name.
    """

    label: str
    help: str
    group: str
    widget: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    cli: bool = True


def _spec(default: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A dataclass field with its :class:`OptionSpec` in the metadata."""
    return field(default=default, metadata={"spec": OptionSpec(**spec)})


@dataclass(frozen=True)
class GenerationOptions:
    """Everything a generation needs besides model folders, device and dtype.

    Paths are strings as given by the user; front ends check that they exist before running. Each field's
    label, help text, group, range or choices are in its :class:`OptionSpec` (:func:`option_spec`).
    """

    source: str = _spec(label="Face picture", group="inputs", cli=False,
                        help="picture (png/jpg/webp/...) or a video whose first frame is used")  # fmt: skip
    driven_audio: str | None = _spec(None, label="Speech recording", group="inputs", cli=False,
                                     help="speech recording; none with idle_seconds for idle (silent) motion")  # fmt: skip
    idle_seconds: float | None = _spec(None, label="Idle length (s)", group="inputs", widget="number",
                                       help="idle mode: seconds of silent motion (no recording needed)")  # fmt: skip
    preprocess: str = _spec(
        "crop", label="Preprocess", group="basic", widget="radio", choices=PREPROCESS_MODES,
        help="crop: face only; resize: whole picture squeezed (portraits); full / extfull: animate the face "
        "and paste it back into the full picture; extcrop: larger face crop",
    )  # fmt: skip
    still: bool = _spec(False, label="Still mode (keep the picture's head pose)", group="basic",
                        widget="checkbox", help="keep the source head pose (less head motion; best with full)")  # fmt: skip
    pose_style: int = _spec(0, label="Pose style", group="motion", widget="slider", minimum=0, maximum=45,
                            step=1, help="head-motion style")  # fmt: skip
    expression_scale: float = _spec(1.0, label="Expression scale", group="motion", widget="slider", minimum=0.0,
                                    maximum=5.0, step=0.05, help="expression strength")  # fmt: skip
    size: int = _spec(256, label="Face renderer size", group="basic", widget="radio", choices=SIZES,
                      help="face renderer size in pixels")  # fmt: skip
    batch_size: int = _spec(2, label="Batch size (frames rendered at once)", group="advanced", widget="slider",
                            minimum=1, maximum=MAX_BATCH, step=1, help="frames rendered at once")  # fmt: skip
    use_blink: bool = _spec(True, label="Eye blinks", group="motion", widget="checkbox", cli=False,
                            help="generated eye blinks (command line: --no_blink turns them off)")  # fmt: skip
    seed: int | None = _spec(None, label="Seed (-1: random)", group="motion", widget="number", minimum=0,
                             maximum=2**32 - 1, help="seed of the blinks and pose noise; random when not given, "
                             "and the seed used is stored in the video")  # fmt: skip
    """Blink schedule and pose noise seed; ``None`` picks one and records it in the outputs."""
    ref_video: str | None = _spec(None, label="Reference video", group="inputs",
                                  help="reference video used as ref_mode says")  # fmt: skip
    ref_mode: str = _spec("pose", label="The reference video provides", group="inputs", widget="radio",
                          choices=REF_MODES, help="what the reference video provides")  # fmt: skip
    ref_pose_video: str | None = _spec(None, label="Head-pose video", group="inputs", cli=False,
                                       help="ref_mode 'pose+blink' with two videos: the head pose from this one")  # fmt: skip
    """ref_mode 'pose+blink' with two videos: the head pose from this one, the blinks from ``ref_video``
    (official ``--ref_pose`` and ``--ref_eyeblink`` naming different videos)."""
    input_yaw: tuple[float, ...] | None = _spec(
        None, label="Yaw keys (degrees, e.g. '0 20 -20')", group="motion", widget="text", minimum=-90.0,
        maximum=90.0, help="free-view yaw in degrees: one value, or several key values the head sweeps through",
    )  # fmt: skip
    input_pitch: tuple[float, ...] | None = _spec(
        None, label="Pitch keys (degrees)", group="motion", widget="text", minimum=-90.0, maximum=90.0,
        help="free-view pitch in degrees: one value, or several key values the head sweeps through",
    )  # fmt: skip
    input_roll: tuple[float, ...] | None = _spec(
        None, label="Roll keys (degrees)", group="motion", widget="text", minimum=-90.0, maximum=90.0,
        help="free-view roll in degrees: one value, or several key values the head sweeps through",
    )  # fmt: skip
    face_index: int = _spec(0, label="Face index (pictures with several faces)", group="advanced",
                            widget="number", minimum=0, help="which face to animate when several are found, "
                            "0 = the first found")  # fmt: skip
    face_detector: str = _spec(
        "retinaface", label="Face detector", group="advanced", widget="dropdown", choices=FACE_DETECTORS,
        help="face landmark backend: retinaface (+ AWing FAN, weights in the face-model folder) or dlib",
    )  # fmt: skip
    enhancer: str = _spec("none", label="Face enhancer (SadTalker's own)", group="advanced", widget="dropdown",
                          choices=ENHANCERS, help="face enhancer: gfpgan restores the faces with GFPGAN v1.4")  # fmt: skip
    background_enhancer: str = _spec(
        "none", label="Background enhancer (realesrgan: Real-ESRGAN x2, video 2x larger)", group="advanced",
        widget="dropdown", choices=BACKGROUND_ENHANCERS,
        help="background enhancer: realesrgan makes the video 2x larger with Real-ESRGAN x2plus",
    )  # fmt: skip
    enhancer_mode: str = _spec(
        "auto", label="How GFPGAN is applied", group="advanced", choices=ENHANCER_MODES,
        help="how gfpgan is applied: official = as official SadTalker, on every final frame (RetinaFace, "
        "ParseNet paste mask; the video is 2x larger), crop = the rendered face crops (same size), "
        "auto = official when its weight files are present",
    )  # fmt: skip
    """:data:`ENHANCER_MODES`; only used with ``enhancer='gfpgan'``."""
    fps: int = _spec(25, label="Frames per second", group="advanced", choices=(25,), cli=False,
                     help="video frame rate (the motion models are trained at 25 fps)")  # fmt: skip
    output: str | None = _spec(None, label="Output file", group="inputs",
                               help="exact output file (.mp4)")  # fmt: skip
    max_audio_seconds: float = _spec(
        MAX_AUDIO_SECONDS, label="Maximum audio length (s)", group="advanced", widget="number",
        help="longest recording (or idle length) accepted, in seconds (> 0); longer audio is refused before "
        "any model loads",
    )  # fmt: skip
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
        if (problem := enhancer_error(self.enhancer)) is not None:
            fail(problem)
        object.__setattr__(self, "enhancer", self.enhancer.lower())  # 'GFPGAN', 'None' as the official
        for name in _CHECKED:  # ranges and choices of the table
            if (problem := check_value(name, getattr(self, name))) is not None:
                fail(problem)
        if self.ref_mode == "all" and self.driven_audio is None and self.ref_video is None:
            fail("ref_mode 'all' needs ref_video")
        if self.ref_pose_video is not None and (self.ref_video is None or self.ref_mode != "pose+blink"):
            fail(
                "ref_pose_video (a separate head-pose video) needs ref_video (the eye-blink video) and "
                "ref_mode 'pose+blink'"
            )

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


OPTION_SPECS: dict[str, OptionSpec] = {
    f.name: f.metadata["spec"] for f in fields(GenerationOptions) if "spec" in f.metadata
}
"""Every described field of :class:`GenerationOptions`, in field order."""

_ANGLES = ("input_yaw", "input_pitch", "input_roll")
_CHECKED = tuple(
    name
    for name, spec in OPTION_SPECS.items()
    if name not in _ANGLES
    and (spec.choices is not None or spec.minimum is not None or spec.maximum is not None)
)
"""Fields whose values :func:`check_value` checks against the table (angles are checked one by one)."""


def option_spec(name: str) -> OptionSpec:
    """The :class:`OptionSpec` of field ``name`` (KeyError for a name that has none)."""
    return OPTION_SPECS[name]


def option_default(name: str) -> Any:
    """The default value of field ``name`` (``None`` for ``source``, which has none)."""
    f = GenerationOptions.__dataclass_fields__[name]
    return None if f.default is dataclasses.MISSING else f.default


def value_type(name: str) -> type:
    """The scalar type of field ``name``'s values: ``int``, ``float`` (also each angle of the angle
    fields), ``bool`` or ``str``."""
    if name in _INTS:
        return int
    if name in _FLOATS or name in _ANGLES:
        return float
    return bool if name in _BOOLS else str


def choices_text(choices: tuple[Any, ...]) -> str:
    """``'25'``, ``'256 or 512'``, ``'one of a, b, c'``."""
    if len(choices) == 1:
        return str(choices[0])
    if len(choices) == 2:
        return f"{choices[0]} or {choices[1]}"
    return "one of " + ", ".join(str(c) for c in choices)


def range_text(name: str) -> str:
    """The allowed values of ``name`` in words (``'from 1 to 64'``, ``'within [0, 5]'``, ``'>= 0'``);
    '' when the table gives none."""
    spec = OPTION_SPECS[name]
    if spec.choices is not None:
        return choices_text(spec.choices)
    lo, hi = spec.minimum, spec.maximum
    if lo is not None and hi is not None:
        return f"from {number_text(lo)} to {number_text(hi)}" if name in _INTS else f"within [{lo:g}, {hi:g}]"
    if lo is not None:
        return f">= {number_text(lo)}"
    return f"<= {number_text(hi)}" if hi is not None else ""


def number_text(value: float) -> str:
    """``5.0`` -> ``'5'``, ``4294967295`` -> ``'4294967295'``, ``0.05`` -> ``'0.05'``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_value(name: str, value: Any) -> str | None:
    """Why ``value`` is outside the range or choices the table gives for ``name``; None when it is fine (or
    None where None is allowed)."""
    spec = OPTION_SPECS[name]
    if value is None:
        return None
    if spec.choices is not None:
        ok = value in spec.choices
    else:
        ok = not isinstance(value, float) or math.isfinite(value)
        ok = ok and (spec.minimum is None or value >= spec.minimum)
        ok = ok and (spec.maximum is None or value <= spec.maximum)
    if ok:
        return None
    shown = repr(value) if isinstance(value, str) else str(value)
    return f"{name} must be {range_text(name)}; got {shown}"


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
