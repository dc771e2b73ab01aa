"""The stand-in host in SD.Next's shape (master 058a7f0, 2026-07-23), for the regressions a real SD.Next
showed: ``paths_internal`` and ``infotext_utils`` are empty compatibility stubs (the real ones are
``paths`` and ``generation_parameters_copypaste``), ``wrap_gradio_gpu_call`` reads ``func.__name__`` and
appends its error to the ``extra_outputs`` list it was given, ``state.begin(title, task_id)`` returns a job
id, there is no ``shared.face_restorers``, and result panels name their send buttons ``{tab}_tab``."""

from __future__ import annotations

import html
import sys
import types
from pathlib import Path

SEND_BUTTON_TABS = ("control", "txt2img", "img2img", "extras", "caption")
"""``ui_common.create_output_panel``: ``create_buttons([...])`` -> buttons ``{tab}_tab`` in this order."""


def wrap_gradio_gpu_call(func, extra_outputs=None, name=None):
    """SD.Next's wrapper: the job name from ``name`` or ``func.__name__``; on an exception it appends the
    error HTML to ``extra_outputs`` itself (the very list it was given)."""
    from modules import progress, shared

    name = name or func.__name__

    def f(*args, **kwargs):
        id_task = args[0] if args and isinstance(args[0], str) and args[0].startswith("task(") else None
        if id_task:
            progress.add_task_to_queue(id_task)
        progress.start_task(id_task)
        jobid = shared.state.begin(name, task_id=id_task or 0)
        try:
            res = list(func(*args, **kwargs))
        except Exception as e:
            res = extra_outputs or []
            res.append(f"<div class='error'>{html.escape(type(e).__name__ + ': ' + str(e))}</div>")
        finally:
            progress.finish_task(id_task)
        shared.state.end(jobid)
        res[-1] += "<div class='performance'><p>Time: 0.01s</p></div>"
        return tuple(res)

    return f


class SDNextState:
    """``shared_state.State`` surface that differs: ``begin(title, task_id, api)`` -> id; ``end(task_id)``."""

    def __init__(self, base):
        self.__dict__["_base"] = base
        self.__dict__["begun"] = []
        self.__dict__["ended"] = []

    def __getattr__(self, name):
        return getattr(self._base, name)

    def __setattr__(self, name, value):
        setattr(self._base, name, value)

    def begin(self, title="", task_id=0, api=None):
        self._base.job = title
        self._base.job_count = 1
        self._base.interrupted = False
        self._base.skipped = False
        job_id = f"job-{len(self.begun) + 1}"
        self.begun.append((title, task_id))
        return job_id

    def end(self, task_id=None, api=None):
        self.ended.append(task_id)


def apply(monkeypatch, root: Path) -> types.SimpleNamespace:
    """Turn the stand-in host (already reset by the ``webui`` fixture) into SD.Next's shape, rooted at ``root``
    with an empty ``data_path`` (SD.Next's default: the working folder)."""
    import modules
    from modules import call_queue, infotext_utils, shared

    stub_paths_internal = types.ModuleType("modules.paths_internal")
    stub_paths_internal.__doc__ = "no longer used, all paths are defined in paths.py"
    paths = types.ModuleType("modules.paths")
    paths.data_path = ""
    paths.script_path = str(root)
    paths.models_path = "models"
    stub_infotext = types.ModuleType("modules.infotext_utils")
    stub_infotext.__doc__ = "a1111 compatibility module: unused"
    for name, mod in (
        ("paths_internal", stub_paths_internal),
        ("paths", paths),
        ("infotext_utils", stub_infotext),
        ("generation_parameters_copypaste", infotext_utils),  # the real send-to functions live here
    ):
        monkeypatch.setitem(sys.modules, f"modules.{name}", mod)
        monkeypatch.setattr(modules, name, mod, raising=False)
    detailer = types.ModuleType("modules.detailer")  # what host_name() looks for
    detailer.__spec__ = types.SimpleNamespace(name="modules.detailer", loader=None, parent="modules",
                                              submodule_search_locations=None)  # fmt: skip
    monkeypatch.setitem(sys.modules, "modules.detailer", detailer)
    monkeypatch.setattr(call_queue, "wrap_gradio_gpu_call", wrap_gradio_gpu_call)
    monkeypatch.delattr(shared, "face_restorers")
    state = SDNextState(shared.state)
    monkeypatch.setattr(shared, "state", state)
    monkeypatch.chdir(root)
    return types.SimpleNamespace(state=state, paste=infotext_utils)
