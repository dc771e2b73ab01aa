"""The one adapter between the extension and the WebUI host's ``modules`` package.

Every host call the tab, the settings and the API make goes through a :class:`Host` object, so the rest
of ``sadtalker_ext.webui`` can be tested against a stand-in host. ``modules`` is imported lazily, inside
methods, and each lookup falls back where A1111 1.6-1.10, Forge (gradio 4) and SD.Next differ
(shared/docs/a1111-api.md).
"""

from __future__ import annotations

import contextlib
import importlib
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
        self, func: Callable[..., Sequence[Any]], extra_outputs: list[Any]
    ) -> Callable[..., Any]:
        """``call_queue.wrap_gradio_gpu_call``: queue lock, job bookkeeping, error HTML, timing."""
        call_queue = self.module("call_queue")
        return call_queue.wrap_gradio_gpu_call(func, extra_outputs=extra_outputs)

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
        """``state.begin(job=...)`` ... ``state.end()`` for work started outside the gradio wrapper (API)."""
        state = self.state
        try:
            state.begin(job=name)
        except TypeError:  # SD.Next: begin(title=..., ...)
            state.begin()
        try:
            yield state
        finally:
            state.end()

    def interrupt(self) -> None:
        self.state.interrupt()

    # ------------------------------------------------------------------ paths
    def _paths(self) -> Any:
        try:
            return self.module("paths_internal")
        except ImportError:
            return self.module("paths")

    def data_path(self) -> Path:
        return Path(self._paths().data_path)

    def models_path(self) -> Path:
        return Path(self._paths().models_path)

    def outputs_root(self) -> Path:
        """``opts.outdir_samples`` when the user set one, else ``<data_path>/outputs``."""
        custom = self.opt("outdir_samples", "") or ""
        if custom:
            return self._absolute(custom)
        default = getattr(self._paths(), "default_output_dir", None)
        return Path(default) if default else self.data_path() / "outputs"

    def _absolute(self, value: str | Path) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.data_path() / p

    def absolute(self, value: str | Path) -> Path:
        """A user-given folder; relative ones are taken from the WebUI data folder (as the host does)."""
        return self._absolute(value)

    # ------------------------------------------------------------------ face restoration
    def face_restorer_names(self) -> list[str]:
        """Names of the host's face restorers (``['CodeFormer', 'GFPGAN']`` on A1111); [] when unavailable."""
        try:
            restorers = list(getattr(self.shared, "face_restorers", []) or [])
        except ImportError:
            return []
        names = []
        for r in restorers:
            name = r.name() if callable(getattr(r, "name", None)) else getattr(r, "name", None)
            if name and name != "None":
                names.append(str(name))
        return names

    def face_restorer(self, name: str) -> RestoreFn | None:
        """A frame function running the host restorer ``name`` (None for ``""``/``None``/unknown names)."""
        if not name or name == "None":
            return None
        for r in list(getattr(self.shared, "face_restorers", []) or []):
            rname = r.name() if callable(getattr(r, "name", None)) else getattr(r, "name", None)
            if rname == name:

                def restore(rgb: np.ndarray, _r: Any = r) -> np.ndarray:
                    out = _r.restore(np.ascontiguousarray(rgb))
                    return np.asarray(out, dtype=np.uint8)

                return restore
        return None

    # ------------------------------------------------------------------ send-to and callbacks
    def paste_module(self) -> Any:
        """``modules.infotext_utils`` (1.8+, Forge), else ``generation_parameters_copypaste`` (1.6, 1.7)."""
        try:
            return self.module("infotext_utils")
        except ImportError:
            return self.module("generation_parameters_copypaste")

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
