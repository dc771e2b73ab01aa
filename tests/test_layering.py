"""Layer boundaries, read from the source with ``ast`` (every import statement, lazy ones inside functions too).

nets <- stages <- pipeline <- front ends, the host behind ``webui/``:

* ``sadtalker_ext/nets/`` imports only torch, numpy, the standard library and sibling nets;
* only ``sadtalker_ext/webui/`` and ``scripts/`` import the host's ``modules``;
* only ``sadtalker_ext/webui/``, ``scripts/`` and the standalone app (``sadtalker_ext/app.py``) import gradio;
* only ``sadtalker_ext/cluster/`` imports ray (an optional dependency);
* the stages do not import the pipeline, the front ends (``cli``, ``app``, ``download.cli``) or ``webui``;
* no runtime code imports a test-only package (librosa and its numba).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.standin import REPO

PACKAGE = "sadtalker_ext"
STAGES = (
    "audio", "motion", "face", "preprocess", "render", "video", "enhance", "enhance_paste", "images",
    "checkpoints", "weights", "paths", "options", "errors", "form", "ffmpeg", "provenance",
)  # fmt: skip
"""Modules / packages of ``sadtalker_ext`` below the pipeline."""
FRONT_AND_PIPELINE = (
    "pipeline", "cli", "app", "download.cli", "webui", "__main__", "download.__main__", "cluster",
)  # fmt: skip


def module_name(path: Path) -> str:
    """Dotted module name of a file under the repository (``sadtalker_ext/audio/__init__.py`` ->
    ``sadtalker_ext.audio``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, as absolute dotted names; relative imports resolved. ``from X import a``
    yields ``X`` and ``X.a`` (``a`` may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return out


def _within(module: str, roots: tuple[str, ...] | list[str]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def _files(*folders: str) -> list[Path]:
    out: list[Path] = []
    for folder in folders:
        p = REPO / folder
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


RUNTIME = _files(PACKAGE, "scripts", "install.py", "preload.py")


def _violations(files: list[Path], forbidden) -> list[str]:
    bad = []
    for f in files:
        for mod in sorted(imported_modules(f)):
            if forbidden(mod):
                bad.append(f"{f.relative_to(REPO)} imports {mod}")
    return bad


def test_import_scan_sees_relative_and_lazy_imports():
    """The scanner itself: relative imports resolve, imports inside functions count."""
    pkg = REPO / PACKAGE / "motion" / "coefficients.py"
    mods = imported_modules(pkg)
    assert f"{PACKAGE}.errors" in mods and f"{PACKAGE}.motion.loading" in mods and "torch" in mods
    pipeline = imported_modules(REPO / PACKAGE / "pipeline.py")
    assert f"{PACKAGE}.motion" in pipeline  # a lazy import inside SadTalker.prepare


def test_nets_import_only_torch_numpy_stdlib_and_sibling_nets():
    allowed_third_party = ("torch", "numpy")

    def forbidden(mod: str) -> bool:
        top = mod.split(".")[0]
        return not (
            top in sys.stdlib_module_names or top in allowed_third_party or _within(mod, [f"{PACKAGE}.nets"])
        )

    nets = _files(f"{PACKAGE}/nets")
    assert len(nets) > 5
    assert _violations(nets, forbidden) == []


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        pytest.param("modules", ("sadtalker_ext/webui/", "scripts/"), id="host-modules"),
        pytest.param("gradio", ("sadtalker_ext/webui/", "scripts/", "sadtalker_ext/app.py"), id="gradio"),
        pytest.param("ray", ("sadtalker_ext/cluster/",), id="ray"),
    ],
)
def test_host_and_gradio_only_behind_the_front_ends(package: str, allowed: tuple[str, ...]):
    files = [f for f in RUNTIME if not f.relative_to(REPO).as_posix().startswith(allowed)]
    assert _violations(files, lambda mod: _within(mod, [package])) == []


def test_stages_do_not_import_pipeline_or_front_ends():
    stage_files = [
        f
        for f in _files(PACKAGE)
        if _within(module_name(f), [f"{PACKAGE}.{s}" for s in STAGES])
        or _within(module_name(f), [f"{PACKAGE}.nets"])
    ]
    assert len(stage_files) > 20
    upper = [f"{PACKAGE}.{m}" for m in FRONT_AND_PIPELINE]
    assert _violations(stage_files, lambda mod: _within(mod, upper)) == []


def test_runtime_code_imports_no_test_only_package():
    """librosa (numba, llvmlite) is a test requirement; the extension does not install it in the WebUI."""
    test_only = ["librosa", "numba", "llvmlite", "resampy"]
    assert len(RUNTIME) > 40
    assert _violations(RUNTIME, lambda mod: _within(mod, test_only)) == []
