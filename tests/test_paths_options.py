"""Model-folder resolution order and option validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sadtalker_ext.errors import InputError
from sadtalker_ext.options import GenerationOptions
from sadtalker_ext.paths import EXTENSION_ROOT, resolve_model_dirs


def test_explicit_argument_wins(tmp_path):
    dirs = resolve_model_dirs(
        tmp_path / "a", flag_checkpoint_dir=tmp_path / "b", environ={"SADTALKER_CHECKPOINTS": "c"}
    )
    assert dirs.checkpoints == tmp_path / "a"
    assert dirs.checkpoints_source == "argument"


def test_flag_then_env_then_webui_then_extension(tmp_path):
    env = {"SADTALKER_CHECKPOINTS": str(tmp_path / "env")}
    assert (
        resolve_model_dirs(flag_checkpoint_dir=tmp_path / "flag", environ=env).checkpoints
        == tmp_path / "flag"
    )
    assert resolve_model_dirs(environ=env).checkpoints == tmp_path / "env"
    webui = tmp_path / "models"
    # the WebUI folder counts only when it exists
    assert (
        resolve_model_dirs(webui_models_dir=webui, environ={}).checkpoints == EXTENSION_ROOT / "checkpoints"
    )
    (webui / "SadTalker" / "gfpgan" / "weights").mkdir(parents=True)
    dirs = resolve_model_dirs(webui_models_dir=webui, environ={})
    assert dirs.checkpoints == webui / "SadTalker"
    assert dirs.gfpgan == webui / "SadTalker" / "gfpgan" / "weights"


def test_extension_root_is_not_named_by_folder():
    assert (EXTENSION_ROOT / "sadtalker_ext" / "paths.py").is_file()
    dirs = resolve_model_dirs(environ={})
    assert dirs.checkpoints == EXTENSION_ROOT / "checkpoints"
    assert dirs.gfpgan == EXTENSION_ROOT / "gfpgan" / "weights"


def test_gfpgan_env(tmp_path):
    dirs = resolve_model_dirs(environ={"SADTALKER_GFPGAN_DIR": str(tmp_path)})
    assert dirs.gfpgan == Path(tmp_path)


def test_defaults_are_valid():
    opts = GenerationOptions(source="a.png", driven_audio="b.wav")
    assert (opts.preprocess, opts.size, opts.pose_style, opts.fps) == ("crop", 256, 0, 25)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"preprocess": "crop2"}, "preprocess"),
        ({"pose_style": 46}, "pose_style"),
        ({"pose_style": -1}, "pose_style"),
        ({"size": 384}, "size"),
        ({"batch_size": 0}, "batch_size"),
        ({"expression_scale": float("nan")}, "expression_scale"),
        ({"face_detector": "mtcnn"}, "face_detector"),
        ({"enhancer": "codeformer2"}, "enhancer"),
        ({"fps": 30}, "fps"),
        ({"ref_mode": "head"}, "ref_mode"),
        ({"driven_audio": None}, "driven_audio"),
        ({"idle_seconds": -1.0}, "idle_seconds"),
        ({"ref_pose_video": "p.mp4"}, "ref_pose_video"),
        ({"ref_pose_video": "p.mp4", "ref_video": "b.mp4"}, "pose\\+blink"),
        ({"ref_pose_video": "p.mp4", "ref_mode": "pose+blink"}, "ref_video"),
    ],
)
def test_bad_values_are_refused_with_the_option_name(change, words):
    base = {"source": "a.png", "driven_audio": "b.wav"}
    base.update(change)
    with pytest.raises(InputError, match=words):
        GenerationOptions(**base)


def test_from_mapping_coerces_and_refuses_unknown():
    opts = GenerationOptions.from_mapping(
        {
            "source": "a.png",
            "driven_audio": "b.wav",
            "size": "512",
            "still": "true",
            "input_yaw": "0, 20 -10",
            "seed": "",
        }
    )
    assert (
        opts.size == 512 and opts.still is True and opts.input_yaw == (0.0, 20.0, -10.0) and opts.seed is None
    )
    with pytest.raises(InputError, match="unknown option"):
        GenerationOptions.from_mapping({"source": "a.png", "driven_audio": "b.wav", "bogus": 1})
    with pytest.raises(InputError, match="input_pitch"):
        GenerationOptions.from_mapping({"source": "a.png", "driven_audio": "b.wav", "input_pitch": "up"})
    with pytest.raises(InputError, match="pose_style"):
        GenerationOptions.from_mapping({"source": "a.png", "driven_audio": "b.wav", "pose_style": 1.5})


def test_to_dict_round_trips():
    opts = GenerationOptions(source="a.png", driven_audio="b.wav", input_roll=(5.0, -5.0), seed=7)
    assert GenerationOptions.from_mapping(opts.to_dict()) == opts


def test_idle_mode_needs_no_audio():
    opts = GenerationOptions(source="a.png", idle_seconds=2.0)
    assert opts.driven_audio is None
