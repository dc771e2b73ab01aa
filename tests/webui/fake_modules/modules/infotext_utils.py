"""``modules.infotext_utils`` (1.8+; ``generation_parameters_copypaste`` before): send-to wiring."""
# ruff: noqa: PTH113

import base64
import io
import os

import gradio as gr
from PIL import Image

paste_fields: dict = {}
registered_param_bindings: list = []


class ParamBinding:
    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None,
                 source_tabname=None, override_settings_component=None, paste_field_names=None):  # fmt: skip
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


def reset():
    paste_fields.clear()
    registered_param_bindings.clear()


def add_paste_fields(tabname, init_img, fields, override_settings_component=None):
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}  # fmt: skip


def register_paste_params_button(binding):
    registered_param_bindings.append(binding)


def image_from_url_text(filedata):
    """Gallery payload -> PIL image (gradio 3 dicts with ``name``/``is_file``; data URLs; Forge's PIL)."""
    if filedata is None:
        return None
    if isinstance(filedata, list):
        if not filedata:
            return None
        filedata = filedata[0]
    if isinstance(filedata, tuple):
        filedata = filedata[0]
    if isinstance(filedata, Image.Image):
        return filedata
    if isinstance(filedata, dict) and filedata.get("is_file", False):
        filename = filedata["name"]
        image = Image.open(filename)
        image.load()
        return image
    if isinstance(filedata, dict):
        filedata = filedata.get("data") or filedata.get("name")
    if isinstance(filedata, str) and filedata.startswith("data:image/"):
        filedata = filedata[filedata.index(",") + 1 :]
        return Image.open(io.BytesIO(base64.decodebytes(filedata.encode("utf-8"))))
    if isinstance(filedata, str) and os.path.isfile(filedata):
        return Image.open(filedata)
    return None


def _js(name):
    """A1111 passes ``_js``; Forge (gradio 4) rewrites it into ``js``, which plain gradio 4 needs."""
    if name is None:
        return {}
    return {"js": name} if int(gr.__version__.split(".")[0]) >= 4 else {"_js": name}


def connect_paste_params_buttons():
    """Wire each registered binding (called by ui.create_ui() inside the main Blocks, after all tabs)."""
    for binding in registered_param_bindings:
        destination_image_component = paste_fields[binding.tabname]["init_img"]
        if binding.source_image_component and destination_image_component:
            if isinstance(binding.source_image_component, gr.Gallery):
                func = image_from_url_text
                jsfunc = "extract_image_from_gallery"
            else:
                func = lambda x: x  # noqa: E731
                jsfunc = None
            binding.paste_button.click(fn=func, inputs=[binding.source_image_component],
                                       outputs=[destination_image_component], show_progress=False, **_js(jsfunc))  # fmt: skip
        destination_fields = paste_fields[binding.tabname]["fields"]
        if binding.source_tabname is not None and destination_fields is not None:
            # the host also copies the prompt-like fields of the source tab; it iterates the source tab's
            # registered fields, which the extras tab registers as None
            names = {"Prompt", "Negative prompt", "Steps", "Face restoration", *binding.paste_field_names}
            source_fields = paste_fields[binding.source_tabname]["fields"]
            binding.paste_button.click(fn=lambda *x: x, inputs=[c for c, n in source_fields if n in names],
                                       outputs=[c for c, n in destination_fields if n in names],
                                       show_progress=False)  # fmt: skip
        binding.paste_button.click(fn=None, inputs=None, outputs=None, show_progress=False,
                                   **_js(f"switch_to_{binding.tabname}"))  # fmt: skip
