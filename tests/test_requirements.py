"""What the extension asks users to install: the runtime requirement lists name no test-only package.

librosa (and with it numba and llvmlite) is used only by tests that compare the numpy audio path with it; in a
WebUI venv numba's build is what crashed some Windows CPUs (``__svml_sqrtf8_ha``). install.py's own list is
checked in tests/webui/test_install.py, the imports of the runtime code in tests/test_layering.py.
"""

from __future__ import annotations

import tomllib
from packaging.requirements import Requirement

from tests.standin import REPO

TEST_ONLY = {"librosa", "numba", "llvmlite", "resampy"}


def _names(lines: list[str]) -> set[str]:
    """Canonical distribution names of requirement lines (comments, blanks and ``-r`` includes skipped)."""
    out = set()
    for line in lines:
        req = line.split("#", 1)[0].strip()
        if req and not req.startswith("-"):
            out.add(Requirement(req).name.lower().replace("_", "-"))
    return out


def _file_names(name: str) -> set[str]:
    return _names((REPO / name).read_text().splitlines())


def test_runtime_requirements_name_no_test_only_package():
    runtime = _file_names("requirements.txt")
    assert {"scipy", "soundfile", "soxr"} <= runtime  # the file was read
    assert not runtime & TEST_ONLY, runtime & TEST_ONLY


def test_package_dependencies_name_no_test_only_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = _names(project["dependencies"])
    assert {"torch", "scipy"} <= deps
    assert not deps & TEST_ONLY, deps & TEST_ONLY
    for extra, reqs in project.get("optional-dependencies", {}).items():
        assert not _names(reqs) & TEST_ONLY, extra


def test_test_environment_has_librosa():
    """The audio tests compare with librosa: the CI environment installs it (test requirements only)."""
    assert "librosa" in _file_names("requirements-ci.txt")


def test_ray_is_optional_and_test_only():
    """``--cluster`` needs Ray: the ``cluster`` extra and the CI list name it, the runtime list (what install.py
    installs into a WebUI venv) and the package's own dependencies do not."""
    assert "ray" not in _file_names("requirements.txt")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "ray" not in _names(project["dependencies"])
    assert _names(project["optional-dependencies"]["cluster"]) == {"ray"}
    assert "ray" in _file_names("requirements-ci.txt")
    assert (
        "sadtalker_ext.cluster"
        in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
