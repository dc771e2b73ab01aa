"""The option table (OptionSpec in GenerationOptions' field metadata) is the one schema: validation, the
command line (--help, choices, defaults, refusals of a real process) and the API's checks all follow it.
The forms are compared with it in tests/webui/test_option_forms.py (gradio 3 and 4)."""

from __future__ import annotations

import argparse
import base64
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sadtalker_ext import cli
from sadtalker_ext.errors import InputError
from sadtalker_ext.options import (
    GROUPS,
    OPTION_SPECS,
    GenerationOptions,
    number_text,
    option_default,
    option_spec,
    range_text,
    value_type,
)
from sadtalker_ext.webui.api import ApiError, parse_request

RANGED = [n for n, s in OPTION_SPECS.items() if s.minimum is not None or s.maximum is not None]
CHOICES = [n for n, s in OPTION_SPECS.items() if s.choices is not None]
BASE = {"source": "face.png", "driven_audio": "speech.wav"}


def _value(name: str, x: float):
    v = value_type(name)(x)
    return (v,) if name.startswith("input_") else v  # the angle fields hold tuples


def _step(name: str) -> float:
    spec = option_spec(name)
    return spec.step or (1 if value_type(name) is int else 0.5)


def test_every_field_has_a_spec_in_a_known_group():
    from dataclasses import fields

    names = [f.name for f in fields(GenerationOptions) if f.name != "extra"]
    assert list(OPTION_SPECS) == names
    for name, spec in OPTION_SPECS.items():
        assert spec.group in GROUPS and spec.label and spec.help, name
        if spec.widget == "slider":
            assert None not in (spec.minimum, spec.maximum, spec.step), name
        if spec.widget in ("radio", "dropdown"):
            assert spec.choices, name
        default = option_default(name)
        if spec.choices is not None and default is not None:
            assert default in spec.choices, name


@pytest.mark.parametrize("name", RANGED)
def test_validation_accepts_the_table_bounds_and_refuses_beyond(name):
    spec = option_spec(name)
    for bound in (spec.minimum, spec.maximum):
        if bound is not None:
            GenerationOptions(**BASE, **{name: _value(name, bound)})
    if spec.maximum is not None:
        beyond = _value(name, spec.maximum + _step(name))
        with pytest.raises(InputError, match=name) as err:
            GenerationOptions(**BASE, **{name: beyond})
        assert range_text(name) in str(err.value)
    if spec.minimum is not None:
        with pytest.raises(InputError, match=name):
            GenerationOptions(**BASE, **{name: _value(name, spec.minimum - _step(name))})


@pytest.mark.parametrize("name", CHOICES)
def test_validation_accepts_every_choice_and_nothing_else(name):
    base = dict(BASE, ref_video="ref.mp4") if name == "ref_mode" else BASE
    for choice in option_spec(name).choices:
        assert getattr(GenerationOptions(**base, **{name: choice}), name) == choice
    bad = 999 if value_type(name) is int else "no-such-choice"
    with pytest.raises(InputError, match=name):
        GenerationOptions(**base, **{name: bad})


def _actions() -> dict[str, argparse.Action]:
    return {a.dest: a for a in cli.build_parser()._actions}


@pytest.mark.parametrize("name", [n for n, s in OPTION_SPECS.items() if s.cli])
def test_cli_flag_follows_the_table(name):
    spec, action = option_spec(name), _actions()[name]
    assert spec.help in action.help and f"--{name}" in action.option_strings
    if spec.choices is not None:
        offered = action.choices or action.metavar.strip("{}").split(",")
        assert [c for c in offered if c != "None"] == list(spec.choices)  # 'None': the official spelling
    elif spec.minimum is not None:
        assert range_text(name) in action.help
    if spec.maximum is not None and value_type(name) is int and name != "seed":
        assert action.metavar == f"{number_text(spec.minimum)}-{number_text(spec.maximum)}"


def test_cli_without_flags_gives_the_table_defaults():
    args = cli.build_parser().parse_args(["--source_image", "f.png", "--driven_audio", "a.wav"])
    opts = cli.options_for(cli.Job(Path("f.png"), Path("a.wav")), args)
    for name in OPTION_SPECS:
        if name not in ("source", "driven_audio"):
            assert getattr(opts, name) == option_default(name), name


def test_cli_help_shows_ranges_and_defaults():
    text = cli.build_parser().format_help()
    assert "--batch_size 1-64" in text and "from 1 to 64; default 2" in text
    assert "--expression_scale 0-5" in text and "within [0, 5]; default 1" in text


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--batch_size", "65", "batch_size must be from 1 to 64; got 65"),
    ("--expression_scale", "5.5", "expression_scale must be within [0, 5]; got 5.5"),
])  # fmt: skip
def test_real_cli_refuses_values_beyond_the_table(tmp_path, flag, value, needle):
    picture, audio = tmp_path / "f.png", tmp_path / "a.wav"
    picture.write_bytes(b"x")
    audio.write_bytes(b"x")
    res = subprocess.run(
        [sys.executable, "-m", "sadtalker_ext", "--source_image", str(picture), "--driven_audio", str(audio),
         "--result_dir", str(tmp_path / "out"), flag, value],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and needle in res.stderr


def _png_base64() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 90)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _api(tmp_path, **values):
    """Options from a real API request body (the picture inline), through the API's own checks."""
    return parse_request({"source_base64": _png_base64(), "idle_seconds": 2, **values}, [], tmp_path)


@pytest.mark.parametrize("name", [n for n in RANGED if not n.startswith("input_")])
def test_api_checks_follow_the_table(tmp_path, name):
    spec = option_spec(name)
    if spec.maximum is not None:
        options = _api(tmp_path, **{name: spec.maximum})[0]
        assert getattr(options, name) == spec.maximum
        with pytest.raises(ApiError) as err:
            _api(tmp_path, **{name: spec.maximum + _step(name)})
        assert err.value.status == 422 and range_text(name) in err.value.message
    if spec.minimum is not None:
        assert getattr(_api(tmp_path, **{name: spec.minimum})[0], name) == spec.minimum


@pytest.mark.parametrize("name", [n for n in CHOICES if n != "fps"])
def test_api_choices_follow_the_table(tmp_path, name):
    extra = {"ref_video_base64": "AAAA"} if name == "ref_mode" else {}
    for choice in option_spec(name).choices:
        assert getattr(_api(tmp_path, **extra, **{name: choice})[0], name) == choice
    with pytest.raises(ApiError) as err:
        _api(tmp_path, **extra, **{name: "no-such-choice" if value_type(name) is str else 999})
    assert err.value.status == 422 and name in err.value.message


def test_pipeline_precisions_are_the_tables():
    """pipeline.py maps the precision names to torch dtypes; the names are options.DTYPES."""
    from sadtalker_ext import pipeline
    from sadtalker_ext.options import DTYPES

    assert tuple(pipeline.DTYPES) == DTYPES
    assert cli.build_parser().get_default("dtype") == DTYPES[0]


def test_readme_option_list_matches_the_table():
    """The README's option list (`--name a|b|c`, `--name LO-HI`) says what the table says."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"`--([a-z_]+) ([\w.+]+(?:\|[\w.+]+)+|-?\d+-\d+)`", text)
    checked = set()
    for name, values in listed:
        if name not in OPTION_SPECS:
            continue
        spec = option_spec(name)
        if "|" in values:
            assert values.split("|") == [str(c) for c in spec.choices], name
        else:
            assert values == f"{number_text(spec.minimum)}-{number_text(spec.maximum)}", name
        checked.add(name)
    assert {"preprocess", "size", "pose_style", "expression_scale", "batch_size", "face_detector"} <= checked
