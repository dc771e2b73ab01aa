"""Both forms (the WebUI tab and the standalone app) take every option component from the option table:
slider bounds and steps, choices, labels and defaults; and the WebUI setting for the default batch size spans
the same range. A slider whose maximum differs from what the options accept fails here (gradio 3 and 4)."""

from __future__ import annotations

import pytest

from sadtalker_ext.form import FORM_FIELDS, FORM_VALUES
from sadtalker_ext.options import OPTION_SPECS, option_default

WIDGET_CLASSES = {
    "slider": "Slider", "radio": "Radio", "dropdown": "Dropdown", "checkbox": "Checkbox", "number": "Number",
    "text": "Textbox",
}  # fmt: skip
FIELDS = [n for n in FORM_FIELDS if n in OPTION_SPECS and OPTION_SPECS[n].widget]


def _choices(component) -> list:
    """Choice values (gradio 4 keeps ``(label, value)`` pairs)."""
    return [c[1] if isinstance(c, tuple | list) else c for c in component.choices]


def assert_follows_table(components: dict, name: str, *, value=None) -> None:
    spec, comp = OPTION_SPECS[name], components[name]
    assert type(comp).__name__ == WIDGET_CLASSES[spec.widget], name
    assert comp.label == spec.label, name
    if spec.widget == "slider":
        assert (comp.minimum, comp.maximum, comp.step) == (spec.minimum, spec.maximum, spec.step), name
    if spec.widget in ("radio", "dropdown"):
        assert _choices(comp) == list(spec.choices), name
    expected = FORM_VALUES.get(name, option_default(name)) if value is None else value
    assert comp.value == expected, name


def _descendants(block) -> set[int]:
    """ids of every block inside ``block`` (gradio wraps form components in Form blocks)."""
    out: set[int] = set()
    for child in getattr(block, "children", []):
        out |= {id(child), *_descendants(child)}
    return out


@pytest.fixture
def tab_blocks(make_extension, webui):
    make_extension()
    return webui.callbacks.ui_tabs_callback()[0][0]


@pytest.fixture
def tab_components(tab_blocks):
    return tab_blocks.sadtalker_components


@pytest.mark.parametrize("name", FIELDS)
def test_tab_component_follows_the_table(tab_components, name):
    assert_follows_table(tab_components, name)


def test_tab_groups_follow_the_table(tab_blocks):
    """Each option sits in the tab (Basic / Motion / Advanced) of its table group."""
    import gradio as gr

    components = tab_blocks.sadtalker_components
    found = {}
    for tab in [b for b in tab_blocks.blocks.values() if isinstance(b, gr.Tab)]:
        inside = _descendants(tab)
        found.update({name: tab.label.lower() for name, c in components.items() if id(c) in inside})
    found = {name: group for name, group in found.items() if name in OPTION_SPECS}
    for name, group in found.items():
        assert OPTION_SPECS[name].group == group, name
    assert {n for n in FIELDS if OPTION_SPECS[n].group != "inputs"} == set(found)


def test_batch_size_setting_spans_the_table_range(make_extension, webui):
    make_extension()
    spec = OPTION_SPECS["batch_size"]
    args = webui.shared.opts.data_labels["sadtalker_default_batch_size"].component_args
    assert (args["minimum"], args["maximum"], args["step"]) == (spec.minimum, spec.maximum, spec.step)
    dtypes = webui.shared.opts.data_labels["sadtalker_dtype"].component_args["choices"]
    from sadtalker_ext.options import DTYPES

    assert dtypes == list(DTYPES)


@pytest.fixture(scope="module")
def app_components(tmp_path_factory):
    from sadtalker_ext import app
    from sadtalker_ext.pipeline import SadTalker

    root = tmp_path_factory.mktemp("app_form")
    talker = SadTalker(checkpoint_dir=root / "ck", gfpgan_dir=root / "gf", device="cpu")
    return app.build_app(talker).sadtalker_components


@pytest.mark.parametrize("name", [*FIELDS, "max_audio_seconds"])
def test_app_component_follows_the_table(app_components, name):
    from sadtalker_ext.app import FORM_FIELDS as APP_FIELDS

    assert name in APP_FIELDS
    # the app preselects dlib when RetinaFace's weights are missing (they are, here)
    detector = {"face_detector": app_components["face_detector"].value}
    assert_follows_table(app_components, name, value=detector.get(name))
