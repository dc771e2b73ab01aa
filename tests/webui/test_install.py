"""install.py with a fake pip: one call, every installed distribution pinned, host packages never named,
--skip-install honoured."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

from tests.webui.conftest import REPO


@pytest.fixture
def install(monkeypatch):
    spec = importlib.util.spec_from_file_location("sadtalker_install", REPO / "install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calls = []

    def fake_run(cmd, *args, **kwargs):
        assert isinstance(cmd, list) and not kwargs.get("shell")
        constraints = Path(cmd[cmd.index("-c") + 1]).read_text()
        calls.append((cmd, constraints))
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    monkeypatch.delitem(sys.modules, "launch", raising=False)
    monkeypatch.setattr(sys, "argv", ["install.py"])
    mod.calls = calls
    return mod


def _pretend_missing(monkeypatch, mod, dists):
    real = mod.is_present
    monkeypatch.setattr(mod, "is_present", lambda dist, module: dist not in dists and real(dist, module))


def test_one_pip_call_with_installed_versions_pinned(install, monkeypatch):
    _pretend_missing(monkeypatch, install, {"scipy", "soundfile"})
    assert install.main() == 0
    assert len(install.calls) == 1
    cmd, constraints = install.calls[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    reqs = [a for a in cmd[4:] if not a.startswith("-") and a != cmd[cmd.index("-c") + 1]]
    assert sorted(r.split(">")[0] for r in reqs) == ["scipy", "soundfile"]
    pins = set(constraints.split())
    for dist in ("numpy", "torch", "gradio", "fastapi"):
        assert f"{dist}=={importlib.metadata.version(dist)}" in {p.lower() for p in pins} | pins, dist
    host_owned = {"torch", "torchvision", "gradio", "numpy", "pillow", "protobuf"}
    assert not any(r.split(">")[0].split("=")[0].lower() in host_owned for r in reqs)


def test_installs_requirements_txt_and_no_librosa(install, monkeypatch):
    """With every package missing, the one pip call names exactly requirements.txt's runtime packages (plus the
    headless opencv where no cv2 exists), and never librosa or its numba/llvmlite: no runtime code needs them,
    and in the WebUI's venv their numba build is what crashed some Windows CPUs (``__svml_sqrtf8_ha``)."""
    monkeypatch.setattr(install, "is_present", lambda dist, module: False)
    monkeypatch.setattr(install.importlib.util, "find_spec", lambda name, *a, **k: None)
    assert install.main() == 0
    (cmd, _constraints), *more = install.calls
    assert not more
    reqs = [a for a in cmd[4:] if not a.startswith("-") and a != cmd[cmd.index("-c") + 1]]
    listed = [line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert sorted(reqs) == sorted([r for r in listed if r] + [install.OPTIONAL_CV2[2]])
    names = {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in reqs}
    assert not names & {"librosa", "numba", "llvmlite", "resampy"}, names
    # Ray (``--cluster`` batches) is an optional extra: never installed into the WebUI's venv, where its
    # pydantic and protobuf needs would fight the host's pins
    assert "ray" not in names, names


def test_nothing_missing_means_no_pip(install, monkeypatch):
    monkeypatch.setattr(install, "missing_requirements", list)
    assert install.main() == 0 and install.calls == []


def test_skip_install_from_launch_args(install, monkeypatch):
    _pretend_missing(monkeypatch, install, {"soundfile"})
    monkeypatch.setitem(
        sys.modules, "launch", types.SimpleNamespace(args=types.SimpleNamespace(skip_install=True))
    )
    assert install.main() == 0 and install.calls == []


def test_skip_install_flag_without_launch(install, monkeypatch):
    _pretend_missing(monkeypatch, install, {"soundfile"})
    monkeypatch.setattr(sys, "argv", ["install.py", "--skip-install"])
    assert install.main() == 0 and install.calls == []
