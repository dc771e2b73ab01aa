"""The one adapter between the extension and the WebUI host's ``modules`` package.

Every host call the tab, the settings and the API make goes through a :class:`Host` object, so the rest
of ``sadtalker_ext.webui`` can be tested against a stand-in host. ``modules`` is imported lazily, inside
methods, and each lookup falls back where A1111 1.6-1.10, Forge (gradio 4) and SD.Next differ
(shared/docs/a1111-api.md).
"""

from __future__ import annotations

import contextlib
import functools
import html
import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TASK_NAME = "sadtalker"
"""The name looked up in ``--use-cpu`` and passed to ``devices.get_device_for``."""

RestoreFn = Callable[[np.ndarray], np.ndarray]
"""``rgb (H, W, 3) uint8 -> rgb (H, W, 3) uint8``."""


class HostFeatureMissing(RuntimeError):
    """The host lacks something a feature needs; the message names the host and the missing piece."""


def gradio_major() -> int:
    """Major version of the installed gradio (3 on A1111 1.x, 4 on Forge)."""
    import gradio as gr

    try:
        return int(str(gr.__version__).split(".")[0])
    except ValueError:
        return 3


class Host:
    """Lazy accessors for the host's modules (``modules.shared``, ``devices``, ``call_queue``, ...)."""

    def __init__(self, ext_dir: str | Path | None = None) -> None:
        self.ext_dir = Path(ext_dir) if ext_dir is not None else None

    # ------------------------------------------------------------------ modules
    @staticmethod
    def module(name: str) -> Any:
        """``modules.<name>`` (ImportError when the host has no such module)."""
        return importlib.import_module(f"modules.{name}")

    @classmethod
    def module_with(cls, names: Sequence[str], *attrs: str) -> Any:
        """The first ``modules.<name>`` that imports and really has every attribute in ``attrs``.

        SD.Next keeps modules with the A1111 names (``paths_internal``, ``infotext_utils``) as empty stubs, so
        an import that succeeds proves nothing; the attributes decide. :class:`HostFeatureMissing` when none fits.
        """
        for name in names:
            try:
                mod = cls.module(name)
            except ImportError:
                continue
            if mod is not None and all(hasattr(mod, a) for a in attrs):
                return mod
        wanted = ", ".join(attrs)
        tried = ", ".join(f"modules.{n}" for n in names)
        raise HostFeatureMissing(f"{host_name()} offers no {wanted} (looked in {tried})")

    @property
    def shared(self) -> Any:
        return self.module("shared")

    @property
    def state(self) -> Any:
        """``shared.state``: job counters, ``interrupted``/``skipped`` flags, live preview."""
        return self.shared.state

    @property
    def opts(self) -> Any:
        return self.shared.opts

    # ------------------------------------------------------------------ settings and flags
    def opt(self, key: str, default: Any = None) -> Any:
        """A setting's value; safe before the option is registered (``opts.data.get``)."""
        opts = self.opts
        data = getattr(opts, "data", None)
        if isinstance(data, dict) and key in data:
            return data[key]
        labels = getattr(opts, "data_labels", None)
        if isinstance(labels, dict) and key in labels:
            return labels[key].default
        return default

    def cmd_opt(self, name: str, default: Any = None) -> Any:
        """A command-line flag (``--sadtalker-x`` is ``sadtalker_x``); default when preload never ran."""
        return getattr(self.shared.cmd_opts, name, default)

    def add_option(self, key: str, info: Any) -> None:
        self.opts.add_option(key, info)

    def option_info(
        self, default: Any, label: str, component: Any = None, component_args: Any = None, **kw: Any
    ):
        """``shared.OptionInfo`` with only the 1.6 keyword set (``category_id`` only where accepted)."""
        cls = getattr(self.shared, "OptionInfo", None) or self.module("options").OptionInfo
        try:
            return cls(default, label, component, component_args, **kw)
        except TypeError:
            kw.pop("category_id", None)
            return cls(default, label, component, component_args, **kw)

    # ------------------------------------------------------------------ device and memory
    def device(self) -> Any:
        """The torch device for SadTalker: CPU when ``sadtalker`` or ``all`` is in ``--use-cpu`` (also on
        Forge, whose ``get_device_for`` ignores the flag), else ``devices.get_device_for('sadtalker')``,
        else ``devices.device`` / ``get_optimal_device()`` (SD.Next has no ``get_device_for``)."""
        import torch

        use_cpu = [str(x).lower() for x in (self.cmd_opt("use_cpu", None) or [])]
        if TASK_NAME in use_cpu or "all" in use_cpu:
            return torch.device("cpu")
        devices = self.module("devices")
        get_for = getattr(devices, "get_device_for", None)
        if callable(get_for):
            return torch.device(get_for(TASK_NAME))
        dev = getattr(devices, "device", None)
        if dev is None:
            dev = devices.get_optimal_device()
        return torch.device(dev)

    def torch_gc(self) -> None:
        """Free cached accelerator memory the host's way (a no-op on CPU)."""
        try:
            self.module("devices").torch_gc()
        except Exception:  # a failing gc must never turn a finished video into an error
            log.warning("devices.torch_gc() failed", exc_info=True)

    # ------------------------------------------------------------------ queue and progress
    def wrap_gpu_call(
        self, func: Callable[..., Sequence[Any]], extra_outputs: list[Any], name: str | None = None
    ) -> Callable[..., Any]:
        """``call_queue.wrap_gradio_gpu_call``: queue lock, job bookkeeping, progress, timing.

        ``func`` may be a ``functools.partial``: the host gets a plain named function (SD.Next reads
        ``func.__name__``, and takes ``name=``). An unexpected exception becomes ``[*extra_outputs, error html]``
        here, logged with its traceback, instead of in the host's wrapper: SD.Next's wrapper appends the error
        to the very ``extra_outputs`` list it was given, so every later error would return one output more.
        """
        call_queue = self.module("call_queue")
        job_name = (
            name
            or getattr(func, "__name__", None)
            or getattr(getattr(func, "func", None), "__name__", "sadtalker")
        )
        fallback = list(extra_outputs)

        def run(*args: Any, **kwargs: Any) -> Sequence[Any]:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                self.report_error(f"SadTalker: {job_name} failed", exc)
                text = html.escape(f"{type(exc).__name__}: {exc}")
                return [*fallback, f"<div class='error'>{text}</div>"]

        run.__name__ = run.__qualname__ = job_name
        if isinstance(func, functools.partial):
            run.__doc__ = func.func.__doc__
        wrap = call_queue.wrap_gradio_gpu_call
        kw: dict[str, Any] = {"extra_outputs": extra_outputs}
        if accepts_keyword(wrap, "name"):
            kw["name"] = job_name
        return wrap(run, **kw)

    def report_error(self, message: str, exc: BaseException) -> None:
        """Log ``exc`` with its traceback the host's way (A1111/Forge ``errors.report``, SD.Next
        ``errors.display``), else through :mod:`logging`."""
        try:
            errors = self.module("errors")
        except ImportError:
            errors = None
        if callable(getattr(errors, "report", None)):
            errors.report(message, exc_info=True)
        elif callable(getattr(errors, "display", None)):
            errors.display(exc, message)
        else:
            log.error("%s", message, exc_info=exc)

    @contextlib.contextmanager
    def queue_lock(self) -> Iterator[None]:
        """Hold the host's GPU queue lock (what the host's own API routes do)."""
        lock = getattr(self.module("call_queue"), "queue_lock", None)
        if lock is None:
            yield
            return
        with lock:
            yield

    @contextlib.contextmanager
    def job(self, name: str) -> Iterator[Any]:
        """``state.begin(job=...)`` ... ``state.end()`` for work started outside the gradio wrapper (API);
        SD.Next: ``begin(title=...)`` returns a job id that ``end()`` takes back."""
        state = self.state
        if accepts_keyword(state.begin, "job"):
            job_id = state.begin(job=name)
        elif accepts_keyword(state.begin, "title"):
            job_id = state.begin(title=name)
        else:
            job_id = state.begin()
        try:
            yield state
        finally:
            if job_id is not None and accepts_keyword(state.end, "task_id"):
                state.end(job_id)
            else:
                state.end()

    def interrupt(self) -> None:
        self.state.interrupt()

    # ------------------------------------------------------------------ paths
    def _path_attr(self, attr: str) -> Any:
        """``paths_internal.<attr>`` (A1111 1.6+, Forge), else ``paths.<attr>`` (SD.Next: ``paths_internal`` is
        an empty stub there)."""
        return getattr(self.module_with(("paths_internal", "paths"), attr), attr)

    def data_path(self) -> Path:
        """The WebUI data folder, absolute (SD.Next's ``data_path`` may be ``""``: its working folder)."""
        return Path(self._path_attr("data_path") or ".").expanduser().resolve()

    def models_path(self) -> Path:
        return self._absolute(self._path_attr("models_path"))

    def outputs_root(self) -> Path:
        """``opts.outdir_samples`` when the user set one, else the host's default output folder (absolute)."""
        custom = self.opt("outdir_samples", "") or ""
        if custom:
            return self._absolute(custom)
        try:
            default = self._path_attr("default_output_dir")
        except HostFeatureMissing:
            default = None
        return self._absolute(default) if default else self.data_path() / "outputs"

    def _absolute(self, value: str | Path) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.data_path() / p

    def absolute(self, value: str | Path) -> Path:
        """A user-given folder; relative ones are taken from the WebUI data folder (as the host does)."""
        return self._absolute(value)

    # ------------------------------------------------------------------ face restoration
    def _restorers(self) -> list[Any]:
        try:
            return list(getattr(self.shared, "face_restorers", None) or [])
        except ImportError:
            return []

    def restorers_note(self) -> str:
        """One line when the host has no face restorer list (SD.Next: its *detailer* re-runs a diffusion model
        on a processing job and cannot restore video frames); "" on A1111 / Forge."""
        try:
            has_list = hasattr(self.shared, "face_restorers")
        except ImportError:
            has_list = False
        if has_list:
            return ""
        return (
            f"{host_name()} has no GFPGAN/CodeFormer face restorers (shared.face_restorers); "
            "use SadTalker's own enhancer (gfpgan) instead."
        )

    def face_restorer_names(self) -> list[str]:
        """Names of the host's face restorers (``['CodeFormer', 'GFPGAN']`` on A1111); [] when unavailable."""
        names = []
        for r in self._restorers():
            name = r.name() if callable(getattr(r, "name", None)) else getattr(r, "name", None)
            if name and name != "None":
                names.append(str(name))
        return names

    def face_restorer(self, name: str) -> RestoreFn | None:
        """A frame function running the host restorer ``name`` (None for ``""``/``None``/unknown names)."""
        if not name or name == "None":
            return None
        for r in self._restorers():
            rname = r.name() if callable(getattr(r, "name", None)) else getattr(r, "name", None)
            if rname == name:

                def restore(rgb: np.ndarray, _r: Any = r) -> np.ndarray:
                    out = _r.restore(np.ascontiguousarray(rgb))
                    return np.asarray(out, dtype=np.uint8)

                return restore
        return None

    # ------------------------------------------------------------------ send-to and callbacks
    def paste_module(self) -> Any:
        """``modules.infotext_utils`` (1.8+, Forge), else ``generation_parameters_copypaste`` (1.6, 1.7, and
        SD.Next, whose ``infotext_utils`` is an empty stub): the first with the send-to functions."""
        return self.module_with(
            ("infotext_utils", "generation_parameters_copypaste"),
            "add_paste_fields",
            "register_paste_params_button",
            "ParamBinding",
        )

    def tool_button(self, value: str, elem_id: str, tooltip: str) -> Any:
        """The host's ``ToolButton`` (fits in the image button rows), else a small gr.Button."""
        try:
            from modules.ui_components import ToolButton

            return ToolButton(value, elem_id=elem_id, tooltip=tooltip)
        except Exception:
            import gradio as gr

            return gr.Button(value, elem_id=elem_id, elem_classes=["tool"])

    @property
    def callbacks(self) -> Any:
        return self.module("script_callbacks")


def host_name() -> str:
    """``"SD.Next"``, ``"Forge"`` or ``"AUTOMATIC1111 WebUI"``, from what the host's files offer (for messages)."""
    find = importlib.util.find_spec
    try:
        if find("modules.detailer") is not None or find("modules.sd_detect") is not None:
            return "SD.Next"
        if find("modules_forge") is not None:
            return "Forge"
    except (ImportError, ValueError):
        pass
    return "AUTOMATIC1111 WebUI"


def accepts_keyword(func: Callable[..., Any], name: str) -> bool:
    """True when ``func`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
