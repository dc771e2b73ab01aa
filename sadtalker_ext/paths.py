"""Where weight files live.

Checkpoint folder, first match wins:
1. an explicit argument,
2. the WebUI flag ``--sadtalker-checkpoint-dir`` (passed in by the WebUI glue as ``flag_dir``),
3. the ``SADTALKER_CHECKPOINTS`` environment variable (the official extension's name),
4. the WebUI's ``models/SadTalker/`` (when ``webui_models_dir`` is given and it exists),
5. this extension's own ``checkpoints/`` (installed with pip: ``<user data>/sadtalker/checkpoints``).

Face models (GFPGAN, RetinaFace, AWing FAN) resolve the same way from ``gfpgan/weights/``
(flag ``--sadtalker-gfpgan-dir``, variable ``SADTALKER_GFPGAN_DIR``, ``models/SadTalker/gfpgan/weights``).

The package's data files (weight manifest, key lists, standard landmarks) are the extension's ``models/``
in a checkout, and the data-only package ``sadtalker_ext/_models`` when installed with ``pip install .``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
EXTENSION_ROOT = PACKAGE_DIR.parent
"""The extension root (holds ``scripts/``, ``models/``, ``checkpoints/``), whatever its folder name; for a
package installed with pip, the ``site-packages`` folder (see :data:`INSTALLED`)."""

_PACKAGED_DATA = PACKAGE_DIR / "_models"
INSTALLED = _PACKAGED_DATA.is_dir()
"""True for a wheel install (``pip install .``): its data is in ``sadtalker_ext/_models``, and it has no
extension folder to keep weights in. False in a checkout, a WebUI extension folder or an editable install."""

DATA_DIR = _PACKAGED_DATA if INSTALLED else EXTENSION_ROOT / "models"
"""The package's data files: ``weights.json``, the key lists, ``lm3d_std_5p.json``."""

CHECKPOINTS_ENV = "SADTALKER_CHECKPOINTS"
GFPGAN_ENV = "SADTALKER_GFPGAN_DIR"


@dataclass(frozen=True)
class ModelDirs:
    """Resolved weight folders and how each was chosen (for status displays)."""

    checkpoints: Path
    gfpgan: Path
    checkpoints_source: str
    gfpgan_source: str


def default_home(environ: dict[str, str] | None = None) -> tuple[Path, str]:
    """Folder holding the default ``checkpoints/`` and ``gfpgan/weights/`` and its label: the extension root,
    or for a pip install ``$XDG_DATA_HOME/sadtalker`` (default ``~/.local/share/sadtalker``)."""
    if not INSTALLED:
        return EXTENSION_ROOT, "extension"
    env = os.environ if environ is None else environ
    base = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share").expanduser()
    return base / "sadtalker", "user data"


def _first(candidates: list[tuple[str, Path | None, bool]]) -> tuple[Path, str]:
    for source, path, must_exist in candidates:
        if path is None:
            continue
        if must_exist and not path.is_dir():
            continue
        return path, source
    raise AssertionError("the last candidate is unconditional")


def resolve_model_dirs(
    checkpoint_dir: str | os.PathLike | None = None,
    gfpgan_dir: str | os.PathLike | None = None,
    *,
    flag_checkpoint_dir: str | os.PathLike | None = None,
    flag_gfpgan_dir: str | os.PathLike | None = None,
    webui_models_dir: str | os.PathLike | None = None,
    environ: dict[str, str] | None = None,
) -> ModelDirs:
    """Apply the resolution order above; returned paths need not exist yet."""
    env = os.environ if environ is None else environ

    def opt(value: str | os.PathLike | None) -> Path | None:
        return Path(value).expanduser() if value else None

    webui = opt(webui_models_dir)
    home, home_label = default_home(env)
    ckpt, ckpt_src = _first(
        [
            ("argument", opt(checkpoint_dir), False),
            ("--sadtalker-checkpoint-dir", opt(flag_checkpoint_dir), False),
            (CHECKPOINTS_ENV, opt(env.get(CHECKPOINTS_ENV)), False),
            ("WebUI models/SadTalker", webui / "SadTalker" if webui else None, True),
            (f"{home_label} checkpoints/", home / "checkpoints", False),
        ]
    )
    gfp, gfp_src = _first(
        [
            ("argument", opt(gfpgan_dir), False),
            ("--sadtalker-gfpgan-dir", opt(flag_gfpgan_dir), False),
            (GFPGAN_ENV, opt(env.get(GFPGAN_ENV)), False),
            (
                "WebUI models/SadTalker/gfpgan",
                webui / "SadTalker" / "gfpgan" / "weights" if webui else None,
                True,
            ),
            (f"{home_label} gfpgan/weights/", home / "gfpgan" / "weights", False),
        ]
    )
    return ModelDirs(ckpt, gfp, ckpt_src, gfp_src)
