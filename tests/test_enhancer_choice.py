"""``--enhancer``: only what exists is offered; the official 'RestoreFormer' is refused up front, clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sadtalker_ext import cli
from sadtalker_ext.errors import InputError
from sadtalker_ext.options import ENHANCERS, IMPLEMENTED_ENHANCERS, GenerationOptions
from tests.standin import MEDIA_DIR

PICTURE = MEDIA_DIR / "full3.png"
AUDIO = MEDIA_DIR / "RD_Radio31_000.wav"
REFUSAL = "'RestoreFormer' is not supported; available: none, gfpgan"


def test_cli_process_refuses_restoreformer_before_loading_anything(tmp_path):
    empty = tmp_path / "no_weights"
    empty.mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "sadtalker_ext", "--source_image", str(PICTURE), "--driven_audio", str(AUDIO),
         "--enhancer", "RestoreFormer", "--checkpoint_dir", str(empty), "--gfpgan_dir", str(empty),
         "--result_dir", str(tmp_path / "out"), "--no_progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert REFUSAL in res.stderr and "WebUI's own face restorers" in res.stderr
    # refused with the arguments: no weight check, no job, no output folder
    assert "missing" not in res.stderr.lower() and res.stdout == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spelling", ["gfpgan", "GFPGAN", "GfpGan"])
def test_official_gfpgan_spelling_is_accepted(spelling):
    args = cli.build_parser().parse_args(
        ["--source_image", str(PICTURE), "--driven_audio", str(AUDIO), "--enhancer", spelling]
    )
    opts = cli.options_for(cli.collect_jobs(args)[0], args)
    assert opts.enhancer == "gfpgan"
    assert GenerationOptions(source="a.png", driven_audio="b.wav", enhancer=spelling).enhancer == "gfpgan"
    none = GenerationOptions.from_mapping({"source": "a.png", "driven_audio": "b.wav", "enhancer": "None"})
    assert none.enhancer == "none"


@pytest.mark.parametrize("name", ["RestoreFormer", "restoreformer"])
def test_options_refuse_restoreformer_naming_what_exists(name):
    with pytest.raises(InputError, match=r"is not supported; available: none, gfpgan"):
        GenerationOptions(source="a.png", driven_audio="b.wav", enhancer=name)
    with pytest.raises(InputError, match=r"unknown; available: none, gfpgan"):
        GenerationOptions(source="a.png", driven_audio="b.wav", enhancer="codeformer")


def test_no_choice_list_offers_restoreformer(tmp_path):
    assert "restoreformer" not in {e.lower() for e in (*ENHANCERS, *IMPLEMENTED_ENHANCERS)}
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if a.dest == "enhancer"]
    assert "restoreformer" not in (action.help + str(action.metavar) + str(action.choices)).lower()
    assert "restoreformer" not in parser.format_help().lower()


def test_standalone_app_does_not_offer_restoreformer(tmp_path):
    pytest.importorskip("gradio")
    from sadtalker_ext import app
    from sadtalker_ext.pipeline import SadTalker

    demo = app.build_app(SadTalker(checkpoint_dir=tmp_path / "ck", gfpgan_dir=tmp_path / "gf"))
    config = demo.get_config_file()
    labels = [
        c for c in config["components"] if "enhancer" in str(c.get("props", {}).get("label", "")).lower()
    ]
    assert labels, "no enhancer dropdown found"
    assert "restoreformer" not in str(config).lower()
