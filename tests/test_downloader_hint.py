"""The downloader command that messages show: one that works from the folder the person is in."""

from __future__ import annotations

import shlex
import sys

from sadtalker_ext import weights
from tests.standin import REPO


def test_from_the_checkout_the_module_form(monkeypatch):
    monkeypatch.delenv(weights.RUN_SH_ENV, raising=False)
    monkeypatch.chdir(REPO)
    got = weights.downloader("--enhancer")
    assert got.endswith("-m sadtalker_ext.download --enhancer") and not got.startswith("cd ")


def test_started_by_run_sh_the_run_sh_form_from_any_folder(monkeypatch, tmp_path):
    run_sh = tmp_path / "my tools" / "run.sh"
    run_sh.parent.mkdir()
    run_sh.write_text("#!/bin/sh\n")
    monkeypatch.setenv(weights.RUN_SH_ENV, str(run_sh))
    monkeypatch.chdir(tmp_path)
    assert weights.downloader("--size", "512") == f"{shlex.quote(str(run_sh))} download --size 512"
    # a stale variable (the file is gone) is not trusted
    run_sh.unlink()
    assert "download --size 512" in weights.downloader("--size", "512")
    assert str(run_sh) not in weights.downloader("--size", "512")


def test_elsewhere_the_console_command_or_the_module_run_from_the_extension(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.RUN_SH_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    got = weights.downloader("--all")
    assert (
        got == f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m sadtalker_ext.download --all"
    )
    tool = bin_dir / "sadtalker-download"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert weights.downloader("--all") == "sadtalker-download --all"


def test_missing_weight_messages_use_it(monkeypatch, tmp_path):
    from sadtalker_ext.weights import Selection, download_command

    run_sh = tmp_path / "run.sh"
    run_sh.write_text("#!/bin/sh\n")
    monkeypatch.setenv(weights.RUN_SH_ENV, str(run_sh))
    assert download_command(Selection(sizes=(256,))).startswith(f"{run_sh} download --size 256")
