"""First contact: ``run.sh`` from the user's own folder, its usage text, and the package installed with pip
(wheel contents, data files, console commands) run outside the checkout."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.standin import MEDIA_DIR, REPO

RUN_SH = REPO / "run.sh"
CONSOLE_SCRIPTS = {
    "sadtalker": "sadtalker_ext.cli:main",
    "sadtalker-download": "sadtalker_ext.download.cli:main",
    "sadtalker-app": "sadtalker_ext.app:main",
}


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would put the checkout on the import path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SADTALKER_VENV", "PYTHONHOME")}
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------------ run.sh


def test_run_sh_without_arguments_prints_only_the_usage(tmp_path):
    done = subprocess.run(["bash", str(RUN_SH)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert any(line.strip().startswith("run.sh cli") for line in lines), done.stdout
    assert any(line.strip().startswith("run.sh download") for line in lines)
    assert not any("set -euo" in line or line.startswith("#") for line in lines), done.stdout
    assert done.stderr == ""
    unknown = subprocess.run(["bash", str(RUN_SH), "clii"], cwd=tmp_path, capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown command 'clii'" in unknown.stderr


def _stand_in_venv(folder: Path) -> tuple[Path, Path]:
    """A venv folder for ``SADTALKER_VENV``: ``bin/python`` runs this interpreter (and logs every call);
    ``pip`` is refused, so a wrong "requirements changed" decision fails the test instead of installing."""
    log = folder / "calls.log"
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> "{log}"\n'
        'case " $* " in *" -m pip "*) echo "stand-in venv: pip refused" >&2; exit 97 ;; esac\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    # the stamp run.sh writes after installing: sha256 of requirements.txt + requirements-ci.txt, 16 hex digits
    wanted = (REPO / "requirements.txt").read_bytes() + (REPO / "requirements-ci.txt").read_bytes()
    (folder / ".installed").write_text(hashlib.sha256(wanted).hexdigest()[:16] + "\n")
    return python, log


def test_run_sh_cli_reads_relative_paths_from_the_callers_folder(tmp_path):
    """``path/to/run.sh cli --source_image in/face.png`` from the user's folder finds the picture there (it
    used to cd into the repository first: "picture not found"); the environment is not reinstalled."""
    _, log = _stand_in_venv(tmp_path / "venv")
    work = tmp_path / "my work"
    (work / "in").mkdir(parents=True)
    shutil.copy(MEDIA_DIR / "full3.png", work / "in" / "face.png")
    shutil.copy(MEDIA_DIR / "RD_Radio31_000.wav", work / "in" / "speech.wav")
    (work / "no weights").mkdir()
    argv = ["bash", str(RUN_SH), "cli", "--source_image", "in/face.png", "--driven_audio", "in/speech.wav",
            "--checkpoint_dir", "no weights", "--gfpgan_dir", "no weights", "--result_dir", "out"]  # fmt: skip
    env = _clean_env(SADTALKER_VENV=str(tmp_path / "venv"))
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    # inputs found and checked; it stops at the (deliberately empty) weight folder of the caller's folder
    assert done.returncode == 1, done.stderr
    assert "not found" not in done.stderr, done.stderr
    assert "missing weight file" in done.stderr and "-> put it in no weights" in done.stderr, done.stderr
    # the command it offers is one that works from this folder: run.sh's, not `python -m` (no module here)
    assert f"{shlex.quote(str(RUN_SH))} download --size 256" in done.stderr, done.stderr
    calls = log.read_text().splitlines()
    assert calls == [
        "-m sadtalker_ext --source_image in/face.png --driven_audio in/speech.wav --checkpoint_dir no weights "
        "--gfpgan_dir no weights --result_dir out"
    ]  # one run of the package, no pip
    assert not (REPO / "out").exists() and not (REPO / "in").exists()
    assert not (work / "out").exists()  # the result folder is checked early but made only for a video


def test_run_sh_cli_help_works_from_another_folder(tmp_path):
    """The package is found without cd'ing into the repository (no ``No module named sadtalker_ext``)."""
    _stand_in_venv(tmp_path / "venv")
    env = _clean_env(SADTALKER_VENV=str(tmp_path / "venv"))
    done = subprocess.run(["bash", str(RUN_SH), "download", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--size" in done.stdout


# ------------------------------------------------------------------------------------------------ wheel


def _copy_source(dest: Path) -> Path:
    """What ``pip install .`` reads, copied out, so that the build leaves nothing (build/, egg-info) in the
    checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(REPO / name, dest / name)
    for name in ("sadtalker_ext", "models", "javascript"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _copy_source(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    # no build isolation: the build uses this environment's setuptools instead of downloading one
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (whl,) = out.glob("*.whl")
    return whl


def test_wheel_holds_the_package_its_data_and_console_commands(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
        metadata = z.read(f"{dist_info}/METADATA").decode()
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "sadtalker_ext").rglob("*.py")}
    assert modules and modules <= names, sorted(modules - names)
    data = {f"sadtalker_ext/_models/{p.name}" for p in (REPO / "models").glob("*.json")}
    assert "sadtalker_ext/_models/weights.json" in data and data <= names, sorted(data - names)
    # the live player, which the standalone app serves (sadtalker_ext.live_streams.player_script)
    assert "sadtalker_ext/_javascript/sadtalker_player.js" in names
    assert not any(n.startswith("sadtalker_ext/_javascript/") and not n.endswith("player.js") for n in names)
    assert not any(n.startswith(("tests/", "scripts/", "bench/", "tools/")) for n in names)
    for command, target in CONSOLE_SCRIPTS.items():
        assert f"{command} = {target}" in entry_points, entry_points
    reqs = [
        Requirement(ln.split(":", 1)[1]) for ln in metadata.splitlines() if ln.startswith("Requires-Dist:")
    ]
    requires = {(r.name, r.specifier) for r in reqs if r.marker is None}  # not the extras
    for line in (REPO / "requirements.txt").read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if req:  # what the WebUI install gets is also a dependency of the package
            r = Requirement(req)
            assert (r.name, r.specifier) in requires, (req, requires)


def test_installed_package_runs_outside_the_checkout(wheel, tmp_path):
    """``pip install`` the wheel (into a folder, without dependencies: this environment has them) and use it
    from an unrelated folder: console commands, data files from the package, weights in the user folder."""
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
         "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(PYTHONPATH=str(target), XDG_DATA_HOME=str(tmp_path / "xdg"))
    env.pop("SADTALKER_CHECKPOINTS", None)
    env.pop("SADTALKER_GFPGAN_DIR", None)

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)

    probe = run(sys.executable, "-c", "import sadtalker_ext.paths as p, sadtalker_ext.weights as w; "
                "print(p.__file__); print(w.MANIFEST_PATH); print(len(w.load_manifest().files))")  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    module_file, manifest_path, count = probe.stdout.split("\n")[:3]
    assert Path(module_file).is_relative_to(target) and Path(manifest_path).is_relative_to(target)
    assert int(count) > 0
    player = run(sys.executable, "-c", "import sadtalker_ext.live_streams as s; p = s.player_script(); "
                 "print(p); print(p.is_file())")  # fmt: skip
    assert player.returncode == 0, player.stderr
    player_file, exists = player.stdout.split("\n")[:2]
    assert Path(player_file).is_relative_to(target) and exists == "True"

    helped = run(sys.executable, "-m", "sadtalker_ext", "--help")
    assert helped.returncode == 0 and "--source_image" in helped.stdout, helped.stderr
    for command in CONSOLE_SCRIPTS:
        assert (target / "bin" / command).is_file(), command
    cli = run(str(target / "bin" / "sadtalker"), "--help")
    assert cli.returncode == 0 and "--driven_audio" in cli.stdout, cli.stderr
    status = run(str(target / "bin" / "sadtalker-download"), "--status")
    assert status.returncode == 0, status.stderr
    ckpt = tmp_path / "xdg" / "sadtalker" / "checkpoints"
    assert f"checkpoints: {ckpt} (user data checkpoints/)" in status.stdout, status.stdout
    assert "SadTalker_V0.0.2_256.safetensors" in status.stdout
