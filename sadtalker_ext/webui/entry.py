"""The callbacks ``scripts/sadtalker_tab.py`` registers: tab, settings, API routes, send-to buttons, unload."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from . import api, jobs, settings, ui
from .host import Host, host_name

log = logging.getLogger(__name__)


class Extension:
    """One extension instance per script load; holds the model session between generations."""

    def __init__(
        self,
        ext_dir: str | Path | None = None,
        host: Host | None = None,
        talker_factory: jobs.TalkerFactory | None = None,
    ) -> None:
        self.ext_dir = Path(ext_dir) if ext_dir is not None else None
        self.host = host or Host(self.ext_dir)
        self.session = jobs.Session(self.host, talker_factory)
        self.send_to = ui.SendToButtons(self.host)

    def ui_tabs(self) -> list[tuple[Any, str, str]]:
        """The SadTalker tab; if building it fails, a tab that shows why (the host would drop it silently)."""
        try:
            tab = ui.build_tab(self.session)
        except Exception as exc:
            log.error("SadTalker: the tab could not be built on %s: %s", host_name(), exc, exc_info=True)
            tab = ui.error_tab(traceback.format_exc())
        return [(tab, ui.TAB_TITLE, ui.TAB_ID)]

    def ui_settings(self) -> None:
        settings.on_ui_settings(self.host)

    def app_started(self, demo: Any, app: Any) -> None:
        api.register_routes(app, self.session)

    def after_component(self, component: Any, **kwargs: Any) -> None:
        self.send_to(component, **kwargs)

    def script_unloaded(self) -> None:
        self.session.unload()

    def register(self) -> None:
        """Register every callback (positional only: ``name=`` breaks A1111 1.6-1.8 and SD.Next)."""
        cb = self.host.callbacks
        cb.on_ui_settings(self.ui_settings)
        cb.on_ui_tabs(self.ui_tabs)
        cb.on_after_component(self.after_component)
        cb.on_app_started(self.app_started)
        if hasattr(cb, "on_script_unloaded"):
            cb.on_script_unloaded(self.script_unloaded)
