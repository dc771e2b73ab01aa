"""``modules.ui_components``: ToolButton and form containers.

Stand-in note: the host's ToolButton is a ``gr.Button`` subclass. Here it is a factory returning a styled
``gr.Button``, because plain gradio 4 writes a ``.pyi`` file next to every component subclass (Forge
patches that away); callers only ever construct it, so the difference does not matter to the extension.
"""

import gradio as gr


def ToolButton(value="", *args, elem_classes=None, tooltip=None, **kwargs):
    """A small emoji button; ``tooltip`` is accepted and dropped (A1111 patches it in, Forge drops it)."""
    return gr.Button(value, *args, elem_classes=["tool", *(elem_classes or [])], **kwargs)


FormRow = gr.Row
FormColumn = gr.Column
FormGroup = gr.Group
