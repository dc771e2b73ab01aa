"""The SadTalker tab (gradio Blocks), its send-to target, and the send-to buttons under the host galleries.

Only arguments that gradio 3.41 (A1111 1.6-1.10) and 4.x (Forge) both accept are used; ``source=`` vs
``sources=`` and ``_js`` vs ``js`` are chosen by the installed gradio's major version.
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
from typing import Any

from .. import form
from ..live_streams import LIVE_DONE_JS, STREAM_SLOT
from . import jobs, models_panel
from .host import Host, HostFeatureMissing, gradio_major, host_name
from .settings import NO_RESTORER, WebUISettings

log = logging.getLogger(__name__)

TAB_TITLE = "SadTalker"
TAB_ID = "sadtalker"
"""``on_ui_tabs`` elem_id: the host wraps the tab as ``#tab_sadtalker``; paste target name ``sadtalker``."""
SEND_SOURCES = ("txt2img", "img2img", "extras")
SDNEXT_SEND_SOURCES = ("txt2img", "img2img", "control", "extras", "gallery")
"""SD.Next's result panels (``ui_common.create_output_panel``): gallery ``{tab}_gallery``, then a row of
send buttons ``control_tab``, ``txt2img_tab``, ``img2img_tab``, ``extras_tab``, ``caption_tab``."""
SDNEXT_LAST_SEND_BUTTON = "caption_tab"
ELEM_IDS = {
    "input_yaw": "sadtalker_yaw", "input_pitch": "sadtalker_pitch", "input_roll": "sadtalker_roll",
    "background_enhancer": "sadtalker_bg_enhancer",
}  # fmt: skip
"""The option components' elem_ids that are not ``sadtalker_<field>``."""


def _sources(*names: str) -> dict[str, Any]:
    """``sources=[...]`` on gradio 4, ``source=<first>`` on gradio 3."""
    return {"sources": list(names)} if gradio_major() >= 4 else {"source": names[0]}


def _js(name: str) -> dict[str, Any]:
    """``js=`` on gradio 4 (Forge also rewrites ``_js``), ``_js=`` on gradio 3."""
    return {"js": name} if gradio_major() >= 4 else {"_js": name}


def picture_type() -> str:
    """``type=`` of the picture input: ``"filepath"`` on gradio 3 (keeps the upload's file name); ``"pil"`` on
    gradio 4, because Forge replaces gradio's ``processing_utils.save_pil_to_cache`` with a function without
    the ``name`` parameter that gradio 4's filepath images pass, so a filepath image input fails there
    (:func:`jobs.picture_file` writes the image to a file for the pipeline)."""
    return "pil" if gradio_major() >= 4 else "filepath"


def build_tab(session: jobs.Session) -> Any:
    """The tab's ``gr.Blocks`` (returned to ``on_ui_tabs`` as ``(blocks, "SadTalker", "sadtalker")``).

    ``blocks.sadtalker_components`` maps each :data:`jobs.FORM_FIELDS` name (and the outputs) to its component.
    """
    import gradio as gr

    host = session.host
    settings = WebUISettings.read(host)
    notes = host_notes(host)
    with gr.Blocks(analytics_enabled=False) as tab:
        if notes:
            gr.HTML(
                "".join(f"<p>{html.escape(n)}</p>" for n in notes),
                elem_id="sadtalker_host_notes",
                elem_classes=["sadtalker-note"],
            )
        with gr.Row(equal_height=False, elem_id="sadtalker_main"):
            with gr.Column(elem_id="sadtalker_inputs"):
                c = _input_section()
            with gr.Column(elem_id="sadtalker_options"):
                c.update(_option_tabs(host, settings))
            with gr.Column(elem_id="sadtalker_results"):
                c.update(_result_section(settings))
        c.update(_batch_section())
        c.update(_models_section(session))
        inputs = [c[name] for name in jobs.FORM_FIELDS]
        _wire(session, c, inputs)
    with contextlib.suppress(HostFeatureMissing):  # already logged and shown by host_notes()
        register_paste_target(host, c["source"])
    tab.sadtalker_components = c  # for tests and other extensions
    return tab


def host_notes(host: Host) -> list[str]:
    """Features this host cannot offer, one line each (also logged once): shown at the top of the tab."""
    notes = []
    try:
        host.paste_module()
    except HostFeatureMissing as exc:
        notes.append(f"Send to SadTalker is not available: {exc}.")
    restorers = host.restorers_note()
    if restorers:
        notes.append(restorers)
    for note in notes:
        log.warning("SadTalker: %s", note)
    return notes


def error_tab(message: str) -> Any:
    """A tab that shows why the SadTalker tab could not be built (instead of no tab at all)."""
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as tab:
        gr.HTML(
            "<div class='sadtalker-error'><h3>SadTalker could not build its tab</h3>"
            f"<p>Host: {html.escape(host_name())}</p><pre>{html.escape(message)}</pre></div>",
            elem_id="sadtalker_error",
        )
    return tab


def _input_section() -> dict[str, Any]:
    import gradio as gr

    c: dict[str, Any] = {}
    c["source"] = gr.Image(label="Face picture", type=picture_type(), elem_id="sadtalker_picture",
                           **_sources("upload", "clipboard"))  # fmt: skip
    c["driven_audio"] = gr.Audio(label="Speech recording", type="filepath", elem_id="sadtalker_audio",
                                 **_sources("upload", "microphone"))  # fmt: skip
    with gr.Row():
        c["idle_mode"] = gr.Checkbox(
            label="Idle mode (no speech)", value=False, elem_id="sadtalker_idle_mode"
        )
        c["idle_seconds"] = form.component(gr, "idle_seconds", elem_id="sadtalker_idle_seconds")
    with gr.Accordion("Reference video", open=False):
        c["ref_video"] = gr.Video(
            label="Reference video", elem_id="sadtalker_ref_video", **_sources("upload")
        )
        c["ref_mode"] = form.component(gr, "ref_mode", elem_id="sadtalker_ref_mode")
    # the names of the files the user chose (gradio gives Python temp names): javascript/sadtalker.js replaces
    # this placeholder with them when Generate is clicked (the page's value stays the placeholder)
    c["upload_names"] = gr.Textbox(
        value=jobs.UPLOAD_NAMES_SLOT, visible=False, elem_id="sadtalker_upload_names"
    )
    return c


def _option_tabs(host: Host, settings: WebUISettings) -> dict[str, Any]:
    """Basic / Motion / Advanced option tabs; defaults from the Settings section."""
    import gradio as gr

    restorers = [NO_RESTORER, *host.face_restorer_names()]
    restorer = settings.default_restorer if settings.default_restorer in restorers else NO_RESTORER
    c: dict[str, Any] = {}
    defaults = {
        "preprocess": settings.default_preprocess, "size": settings.default_size, "still": settings.default_still,
        "face_detector": settings.default_face_detector, "batch_size": settings.default_batch_size,
    }  # fmt: skip
    for group in ("basic", "motion", "advanced"):
        with gr.Tab(group.capitalize()):
            for name in form.form_fields(group):
                kw = {"value": defaults[name]} if name in defaults else {}
                c[name] = form.component(gr, name, elem_id=ELEM_IDS.get(name, f"sadtalker_{name}"), **kw)
            if group == "basic":
                c["restorer"] = gr.Dropdown(restorers, value=restorer, label="Face restoration (WebUI)",
                                            elem_id="sadtalker_restorer")  # fmt: skip
    return c


def _result_section(settings: WebUISettings) -> dict[str, Any]:
    import gradio as gr

    c: dict[str, Any] = {}
    with gr.Row():
        c["generate"] = gr.Button("Generate", variant="primary", elem_id="sadtalker_generate")
        c["interrupt"] = gr.Button("Interrupt", elem_id="sadtalker_interrupt")
        c["skip"] = gr.Button("Skip", elem_id="sadtalker_skip")
    c["id_task"] = gr.Textbox(visible=False, elem_id="sadtalker_id_task")
    c["play_live"] = gr.Checkbox(
        label="Play while generating", value=settings.play_while_generating, elem_id="sadtalker_play_live"
    )
    # javascript/sadtalker_player.js puts the job's stream token in place of this placeholder on Generate
    c["stream_token"] = gr.Textbox(value=STREAM_SLOT, visible=False, elem_id="sadtalker_stream_token")
    with gr.Column(elem_id="sadtalker_results_panel"):
        # the player's place (not an output of Generate: gradio's pending overlay would cover it)
        c["live"] = gr.HTML(elem_id="sadtalker_live")
        c["video"] = gr.Video(label="Result", interactive=False, elem_id="sadtalker_video")
        c["infotext"] = gr.Textbox(label="Infotext", lines=3, interactive=False, elem_id="sadtalker_infotext")
        c["html_log"] = gr.HTML(elem_id="sadtalker_html_log")
    return c


def _batch_section() -> dict[str, Any]:
    import gradio as gr

    c: dict[str, Any] = {}
    with gr.Accordion("Batch: several pictures x several recordings", open=False, elem_id="sadtalker_batch"):
        with gr.Row():
            c["batch_pictures"] = gr.File(label="Pictures", file_count="multiple", file_types=["image"],
                                          elem_id="sadtalker_batch_pictures")  # fmt: skip
            c["batch_recordings"] = gr.File(label="Recordings", file_count="multiple", file_types=["audio"],
                                            elem_id="sadtalker_batch_recordings")  # fmt: skip
        c["batch_id_task"] = gr.Textbox(visible=False, elem_id="sadtalker_batch_id_task")
        c["batch_generate"] = gr.Button(
            "Generate batch", variant="primary", elem_id="sadtalker_batch_generate"
        )
        with gr.Column(elem_id="sadtalker_batch_panel"):
            c["batch_videos"] = gr.File(label="Videos", file_count="multiple", interactive=False,
                                        elem_id="sadtalker_batch_videos")  # fmt: skip
            c["batch_infotext"] = gr.Textbox(label="Infotexts", lines=3, interactive=False,
                                             elem_id="sadtalker_batch_infotext")  # fmt: skip
            c["batch_html_log"] = gr.HTML(elem_id="sadtalker_batch_html_log")
    return c


def _models_section(session: jobs.Session) -> dict[str, Any]:
    import gradio as gr

    c: dict[str, Any] = {}
    with gr.Accordion("Models", open=False, elem_id="sadtalker_models"):
        c["status"] = gr.HTML(value=models_panel.status_html(session), elem_id="sadtalker_model_status")
        with gr.Row():
            c["refresh"] = gr.Button("Refresh", elem_id="sadtalker_models_refresh")
            c["unload"] = gr.Button("Unload models", elem_id="sadtalker_models_unload")
        with gr.Row():
            c["dl_sizes"] = gr.CheckboxGroup(
                ["256", "512"], value=["256"], label="Sizes", elem_id="sadtalker_dl_sizes"
            )
            c["dl_full"] = gr.Checkbox(label=jobs.DOWNLOAD_BOXES["full"], value=True,
                                       elem_id="sadtalker_dl_full")  # fmt: skip
            c["dl_detector"] = gr.Checkbox(label=jobs.DOWNLOAD_BOXES["detector"], value=True,
                                           elem_id="sadtalker_dl_detector")  # fmt: skip
            c["dl_enhancer"] = gr.Checkbox(label=jobs.DOWNLOAD_BOXES["enhancer"], value=False,
                                           elem_id="sadtalker_dl_enhancer")  # fmt: skip
            c["dl_background"] = gr.Checkbox(label=jobs.DOWNLOAD_BOXES["background"], value=False,
                                             elem_id="sadtalker_dl_background")  # fmt: skip
        c["dl_id_task"] = gr.Textbox(visible=False, elem_id="sadtalker_dl_id_task")
        c["download"] = gr.Button("Download missing weights", elem_id="sadtalker_download")
        with gr.Column(elem_id="sadtalker_download_panel"):
            c["download_log"] = gr.HTML(elem_id="sadtalker_download_log")
    return c


def _wire(session: jobs.Session, c: dict[str, Any], inputs: list[Any]) -> None:
    """Events: Generate / batch / Download through ``wrap_gradio_gpu_call`` (task id first, HTML last)."""
    import gradio as gr

    host = session.host
    gpu = host.wrap_gpu_call
    generate = jobs.streaming_generate(
        session, gpu(functools.partial(jobs.generate_single, session), [None, ""], "sadtalker_generate")
    )
    c["generate"].click(
        fn=generate,
        inputs=[c["id_task"], *inputs, c["upload_names"], c["play_live"], c["stream_token"]],
        outputs=[c["video"], c["infotext"], c["html_log"]],
        **_js("sadtalker_submit"),
    ).then(  # browser only: the live player hands over to the result (or goes away without one)
        fn=None, inputs=[c["video"]], outputs=[], **_js(LIVE_DONE_JS)
    )
    for elem_id, field in jobs.UPLOAD_NAME_FIELDS.items():
        # browser only: remember which file became this input's value (its name travels with Generate)
        c[field].upload(
            fn=None, inputs=[c[field]], outputs=[], **_js(f"(v) => sadtalker_uploaded('{elem_id}', v)")
        )
    c["interrupt"].click(fn=lambda: host.state.interrupt(), inputs=[], outputs=[])
    c["skip"].click(fn=lambda: host.state.skip(), inputs=[], outputs=[])
    c["batch_generate"].click(
        fn=gpu(functools.partial(jobs.generate_batch, session), [None, ""], "sadtalker_generate_batch"),
        inputs=[c["batch_id_task"], c["batch_pictures"], c["batch_recordings"], *inputs],
        outputs=[c["batch_videos"], c["batch_infotext"], c["batch_html_log"]],
        **_js("sadtalker_submit_batch"),
    )
    c["refresh"].click(fn=lambda: models_panel.status_html(session), inputs=[], outputs=[c["status"]])
    c["unload"].click(
        fn=lambda: (session.unload(), models_panel.status_html(session))[1], inputs=[], outputs=[c["status"]]
    )
    c["download"].click(
        fn=gpu(
            functools.partial(models_panel.download_weights, session), [gr.update()], "sadtalker_download"
        ),
        inputs=[
            c["dl_id_task"],
            c["dl_sizes"],
            c["dl_full"],
            c["dl_detector"],
            c["dl_enhancer"],
            c["dl_background"],
        ],
        outputs=[c["status"], c["download_log"]],
        **_js("sadtalker_submit_download"),
    )


def register_paste_target(host: Host, picture: Any) -> None:
    """Make the picture input the ``sadtalker`` send-to target (``add_paste_fields``)."""
    pc = host.paste_module()
    pc.add_paste_fields(TAB_ID, picture, [])


class SendToButtons:
    """``on_after_component`` callback: a 🎤 button after each host row's "send to extras" button (A1111,
    Forge: ``{tab}_send_to_extras``; SD.Next: the last of its ``*_tab`` send buttons, ``caption_tab``, after
    the ``{tab}_gallery`` of the panel being built), wired to our tab with ``register_paste_params_button``
    (the host connects it once every tab exists). Nothing is added where the host has no send-to functions
    (:func:`host_notes` says so in the tab)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.galleries: dict[str, Any] = {}
        self.buttons: dict[str, Any] = {}
        self._panel: str | None = None  # SD.Next: the result panel whose buttons come next

    def __call__(self, component: Any, **kwargs: Any) -> None:
        elem_id = getattr(component, "elem_id", None) or kwargs.get("elem_id")
        if not elem_id:
            return
        for tab in (*SEND_SOURCES, *SDNEXT_SEND_SOURCES):
            if elem_id == f"{tab}_gallery":
                self.galleries[tab] = component
                self._panel = tab
                return
        if elem_id.endswith("_send_to_extras"):
            tab = elem_id[: -len("_send_to_extras")]
            if tab in SEND_SOURCES and tab in self.galleries and tab not in self.buttons:
                self.add_button(tab)
        elif elem_id == SDNEXT_LAST_SEND_BUTTON and self._panel is not None:
            tab, self._panel = self._panel, None
            if tab not in self.buttons:
                self.add_button(tab)

    def add_button(self, tab: str) -> Any:
        try:
            pc = self.host.paste_module()
        except HostFeatureMissing:
            return None  # the tab's host notes say why
        button = self.host.tool_button(
            "🎤", elem_id=f"{tab}_send_to_sadtalker", tooltip="Send image to SadTalker"
        )
        self.buttons[tab] = button
        # No source_tabname: it asks the host to also copy prompt fields from the source tab's paste fields,
        # and the extras tab registers None there, so connect_paste_params_buttons() would fail on it and
        # take the whole UI down (seen in Forge main); the tab has no infotext fields to receive anyway.
        pc.register_paste_params_button(
            pc.ParamBinding(paste_button=button, tabname=TAB_ID, source_image_component=self.galleries[tab])
        )
        return button
