"""``run.sh test`` (what ``.ci/run`` runs) lints first: a ``ruff check`` or ``ruff format --check`` finding fails
the run before pytest starts; a clean tree goes on to pytest.

Runs the real run.sh from a copy of the repository's run.sh, ruff config and requirement files beside one
Python file, with stand-in venvs (their ``python`` only logs; their ``ruff`` is the real one).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.standin import REPO

COPIED = ("run.sh", "pyproject.toml", "requirements.txt", "requirements-ci.txt", "requirements-gradio4.txt")


def _ruff() -> Path:
    beside = Path(sys.executable).parent / "ruff"
    found = beside if beside.is_file() else shutil.which("ruff")
    assert found, "ruff is a test requirement (requirements-ci.txt)"
    return Path(found)


def _venv(folder: Path, reqs: str, log: Path) -> None:
    """A venv whose ``python`` logs its arguments and succeeds, whose stamp says ``reqs`` is installed."""
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    python.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\necho gradio-stand-in\n')
    python.chmod(0o755)
    (folder / "bin" / "ruff").symlink_to(_ruff())
    wanted = (REPO / "requirements.txt").read_bytes() + (REPO / reqs).read_bytes()
    (folder / ".installed").write_text(hashlib.sha256(wanted).hexdigest()[:16] + "\n")


def _run_test(tmp_path: Path, source: str) -> tuple[subprocess.CompletedProcess, str]:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    for name in COPIED:
        shutil.copy(REPO / name, repo / name)
    (repo / "pkg" / "mod.py").write_text(source)
    log = tmp_path / "calls.log"
    log.write_text("")
    _venv(tmp_path / "venv", "requirements-ci.txt", log)
    _venv(tmp_path / "venv4", "requirements-gradio4.txt", log)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(SADTALKER_VENV=str(tmp_path / "venv"), SADTALKER_VENV_GRADIO4=str(tmp_path / "venv4"))
    done = subprocess.run(
        ["bash", str(repo / "run.sh"), "test"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, log.read_text()


CLEAN = '"""A module."""\n\nVALUE = [1, 2]\n'


@pytest.mark.parametrize(
    ("source", "finding"),
    [
        pytest.param('"""A module."""\n\nimport os\n\nVALUE = [1, 2]\n', "F401", id="ruff-check"),
        pytest.param('"""A module."""\n\nVALUE = [1,2]\n', "would be reformatted", id="ruff-format"),
    ],
)
def test_a_ruff_finding_fails_the_run_before_pytest(tmp_path, source: str, finding: str):
    done, calls = _run_test(tmp_path, source)
    assert done.returncode == 1, done.stdout + done.stderr
    assert finding in done.stdout + done.stderr
    assert "run.sh: ruff failed" in done.stderr
    assert "-m pytest" not in calls, calls


def test_a_clean_tree_goes_on_to_pytest(tmp_path):
    done, calls = _run_test(tmp_path, CLEAN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run.sh: ruff failed" not in done.stderr
    assert "-m pytest" in calls, calls
