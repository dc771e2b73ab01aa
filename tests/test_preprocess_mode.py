"""The one preprocess-mode table (:class:`PreprocessMode`) and the modules that ask it: names, parsing, and for
every mode what the crop, the coefficient rows, the MappingNet file and the weight selection become."""

from __future__ import annotations

import numpy as np
import pytest

from sadtalker_ext.checkpoints import mapping_name
from sadtalker_ext.errors import InputError
from sadtalker_ext.options import PREPROCESS_MODES, GenerationOptions
from sadtalker_ext.preprocess.crop import CropInfo, plan_crop
from sadtalker_ext.preprocess.mode import MODE_NAMES, PreprocessMode
from sadtalker_ext.preprocess.paste import PasteBack
from sadtalker_ext.render.motion import assemble_coefficients
from sadtalker_ext.weights import MAPPING_CROP, MAPPING_FULL, load_manifest, required_files
from tests.test_preprocess_units import synthetic_landmarks, synthetic_picture

# mode: (crops_face, is_extended, is_full, uses_crop_params, MappingNet file) as the official code has them
TABLE = {
    "crop": (True, False, False, False, MAPPING_CROP),
    "resize": (False, False, False, False, MAPPING_CROP),
    "full": (True, False, True, True, MAPPING_FULL),
    "extcrop": (True, True, False, False, MAPPING_CROP),
    "extfull": (True, True, True, True, MAPPING_FULL),
}


def test_the_names_are_listed_once_in_the_official_order():
    assert MODE_NAMES == ("crop", "resize", "full", "extcrop", "extfull")
    assert PREPROCESS_MODES == MODE_NAMES  # what the CLI, the app and the WebUI offer


@pytest.mark.parametrize("name", list(TABLE))
def test_table(name: str):
    mode = PreprocessMode.parse(name)
    crops_face, extended, full, crop_params, mapping = TABLE[name]
    assert (mode.value, mode.crops_face, mode.is_extended, mode.is_full) == (name, crops_face, extended, full)
    assert mode.uses_crop_params == crop_params
    assert mapping_name(mode) == mapping_name(name) == mapping


@pytest.mark.parametrize("text", ["CROP", "ExtFull", "full", PreprocessMode.RESIZE])
def test_parse_takes_any_case_and_modes(text):
    mode = PreprocessMode.parse(text)
    assert mode.value == (text.value if isinstance(text, PreprocessMode) else text.lower())


@pytest.mark.parametrize("bad", ["crop_full", "", "full ", None, 3])
def test_parse_refuses_other_values_naming_the_modes(bad):
    with pytest.raises(InputError, match=r"unknown preprocess mode .*crop, resize, full, extcrop, extfull"):
        PreprocessMode.parse(bad)
    with pytest.raises(InputError):
        mapping_name(bad)


@pytest.mark.parametrize("name", list(TABLE))
def test_weights_a_run_needs_follow_the_table(name: str):
    names = required_files(256, name).names(load_manifest())
    mapping = TABLE[name][4]
    other = MAPPING_FULL if mapping == MAPPING_CROP else MAPPING_CROP
    assert mapping in names and other not in names


@pytest.mark.parametrize("name", list(TABLE))
def test_renderer_rows_carry_the_crop_parameters_only_where_the_table_says(name: str):
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(1, 73)), rng.normal(size=(5, 70))
    row, seq = assemble_coefficients(source, target, preprocess=name)
    channels = 73 if TABLE[name][3] else 70
    assert row.shape == (1, channels) and seq.shape == (5, channels)
    if channels == 73:  # the source's (s, tx, ty) on every frame
        np.testing.assert_array_equal(seq[:, 70:], np.repeat(source[:, 70:].astype(np.float32), 5, axis=0))


@pytest.mark.parametrize("name", list(TABLE))
def test_crop_plan_and_paste_back_follow_the_table(name: str):
    picture = synthetic_picture()
    plan = plan_crop(picture, name, lambda rgb: synthetic_landmarks(80, 70))
    crops_face, extended, full = TABLE[name][:3]
    assert plan.mode is PreprocessMode.parse(name)
    assert (plan.boxes is not None) == crops_face
    region = plan.region(picture)
    if not crops_face:
        assert region.shape == picture.shape
    elif extended:  # the whole crop box
        clx, cly, crx, cry = plan.crop_info.crop_box
        assert region.shape[:2] == (cry - cly, crx - clx)
    else:  # cut again to the face quad
        assert region.shape[1::-1] == plan.crop_info.size_wh
    if full:
        PasteBack(picture, plan.crop_info, name, 64)
    else:
        with pytest.raises(InputError, match="paste-back is only done for the full modes"):
            PasteBack(picture, CropInfo((10, 10), (0, 0, 20, 20), (0.0, 0.0, 10.0, 10.0)), name, 64)


def test_options_keep_the_case_sensitive_check():
    """GenerationOptions takes the user's exact names (the stages also read other cases)."""
    assert (
        GenerationOptions(source="a.png", driven_audio="a.wav", preprocess="extfull").preprocess == "extfull"
    )
    with pytest.raises(InputError, match="preprocess must be one of crop, resize, full, extcrop, extfull"):
        GenerationOptions(source="a.png", driven_audio="a.wav", preprocess="Full")
