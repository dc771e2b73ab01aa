"""``modules.script_callbacks`` as in 1.6-1.8: ``on_*(callback)`` takes NO ``name=`` keyword (1.9+ does),
so an extension passing ``name=`` fails here the way it would on 1.6-1.8 and SD.Next."""

import inspect
from collections import namedtuple

from modules import errors

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback"])
callback_map: dict[str, list] = {}
_CATEGORIES = ("callbacks_app_started", "callbacks_ui_tabs", "callbacks_ui_settings", "callbacks_after_component",
               "callbacks_before_component", "callbacks_script_unloaded", "callbacks_before_reload")  # fmt: skip


def clear_callbacks():
    for key in _CATEGORIES:
        callback_map[key] = []


clear_callbacks()


def _add(category, fun):
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    callback_map[category].append(ScriptCallback(filename, fun))


def on_app_started(callback):
    _add("callbacks_app_started", callback)


def on_ui_tabs(callback):
    _add("callbacks_ui_tabs", callback)


def on_ui_settings(callback):
    _add("callbacks_ui_settings", callback)


def on_after_component(callback):
    _add("callbacks_after_component", callback)


def on_before_component(callback):
    _add("callbacks_before_component", callback)


def on_script_unloaded(callback):
    _add("callbacks_script_unloaded", callback)


def on_before_reload(callback):
    _add("callbacks_before_reload", callback)


def app_started_callback(demo, app):
    for c in callback_map["callbacks_app_started"]:
        try:
            c.callback(demo, app)
        except Exception:
            errors.report(f"Error executing callback app_started_callback for {c.script}", exc_info=True)


def ui_tabs_callback():
    res = []
    for c in callback_map["callbacks_ui_tabs"]:
        try:
            res += c.callback() or []
        except Exception:
            errors.report(f"Error executing callback ui_tabs_callback for {c.script}", exc_info=True)
    return res


def ui_settings_callback():
    for c in callback_map["callbacks_ui_settings"]:
        try:
            c.callback()
        except Exception:
            errors.report(f"Error executing callback ui_settings_callback for {c.script}", exc_info=True)


def after_component_callback(component, **kwargs):
    for c in callback_map["callbacks_after_component"]:
        try:
            c.callback(component, **kwargs)
        except Exception:
            errors.report(f"Error executing callback after_component_callback for {c.script}", exc_info=True)


def script_unloaded_callback():
    for c in reversed(callback_map["callbacks_script_unloaded"]):
        try:
            c.callback()
        except Exception:
            errors.report(f"Error executing callback script_unloaded for {c.script}", exc_info=True)
