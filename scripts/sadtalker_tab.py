"""WebUI entry of the SadTalker extension: registers the tab, settings, API and send-to buttons.

The host executes this file with the extension folder on ``sys.path`` only for the duration of the import
(module name ``sadtalker_tab.py``, not kept in ``sys.modules``), so the package is imported here, at top
level, and the folder is captured now. If the package cannot be imported, a tab showing the error takes
the SadTalker tab's place instead of the tab silently vanishing.
"""

from __future__ import annotations

import html
import logging
import traceback
from pathlib import Path

from modules import script_callbacks

log = logging.getLogger("sadtalker")


def _extension_dir() -> Path:
    """This extension's folder as the host sees it (``scripts.basedir()`` during the import)."""
    try:
        from modules import scripts

        base = Path(scripts.basedir())
        if (base / "scripts" / "sadtalker_tab.py").is_file():
            return base
    except Exception:
        log.debug("scripts.basedir() unavailable", exc_info=True)
    return Path(__file__).absolute().parent.parent


EXT_DIR = _extension_dir()

try:
    from sadtalker_ext.webui.entry import Extension
except Exception:  # show the reason in the UI instead of losing the tab
    IMPORT_ERROR = traceback.format_exc()
    log.error("SadTalker: the extension package failed to import:\n%s", IMPORT_ERROR)
    Extension = None
else:
    IMPORT_ERROR = ""


def _error_tab():
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as tab:
        gr.HTML(
            "<div class='sadtalker-error'><h3>SadTalker could not start</h3>"
            f"<p>Extension folder: <code>{html.escape(str(EXT_DIR))}</code></p>"
            f"<pre>{html.escape(IMPORT_ERROR)}</pre></div>",
            elem_id="sadtalker_error",
        )
    return [(tab, "SadTalker", "sadtalker")]


if Extension is not None:
    EXTENSION = Extension(EXT_DIR)
    EXTENSION.register()
else:
    EXTENSION = None
    script_callbacks.on_ui_tabs(_error_tab)
