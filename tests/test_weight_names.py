"""Weight knowledge in one place: the official file names (and their URLs) live in ``models/weights.json`` and
``sadtalker_ext/weights.py``; every other module gets them from there (stages receive paths)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext import face, paths, weights
from sadtalker_ext.errors import CheckpointError
from tests.standin import REPO

ALLOWED = {"sadtalker_ext/weights.py", "sadtalker_ext/paths.py"}
"""Modules that may spell the names (``sadtalker_ext/download/`` too)."""


def _manifest_files() -> list[dict]:
    return json.loads((REPO / "models" / "weights.json").read_text(encoding="utf-8"))["files"]


def _official_names() -> list[str]:
    return [entry["name"] for entry in _manifest_files()]


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant of a module except docstrings (also the parts of f-strings)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docs = {
        id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
    }
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def test_weights_module_names_the_manifests_files():
    assert sorted(weights.OFFICIAL_FILES) == sorted(_official_names())
    for entry in _manifest_files():
        assert weights.download_url(entry["name"]) == entry["urls"][0]


def test_no_other_module_spells_an_official_file_name():
    names = _official_names()
    assert len(names) >= 9
    found = []
    files = sorted((REPO / "sadtalker_ext").rglob("*.py")) + sorted((REPO / "scripts").rglob("*.py"))
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        if rel in ALLOWED or rel.startswith("sadtalker_ext/download/"):
            continue
        for line, text in _string_literals(path):
            found += [f"{rel}:{line}: {name}" for name in names if name in text]
    assert not found, "official file names outside sadtalker_ext/weights.py:\n" + "\n".join(found)


def test_retinaface_backend_does_not_look_for_its_folder(monkeypatch):
    """The stage receives the folder: without one it says so, and never asks ``paths`` where files live."""

    def no_lookup(*args, **kwargs):
        raise AssertionError("the face backend resolved the model folders itself")

    monkeypatch.setattr(paths, "resolve_model_dirs", no_lookup)
    with pytest.raises(CheckpointError, match=r"needs the gfpgan/weights folder .* pass it as model_dir"):
        face.detect_faces(np.zeros((32, 32, 3), np.uint8), "retinaface")
