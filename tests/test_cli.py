"""Command line: flag spellings, --help, bad values, missing weights, batch behaviour (no real models)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from sadtalker_ext import cli
from sadtalker_ext.errors import InputError
from sadtalker_ext.pipeline import Result
from tests.standin import MEDIA_DIR

PICTURE = MEDIA_DIR / "full3.png"
AUDIO = MEDIA_DIR / "RD_Radio31_000.wav"

OFFICIAL_FLAGS = [
    "--driven_audio", "--source_image", "--ref_eyeblink", "--ref_pose", "--checkpoint_dir", "--result_dir",
    "--pose_style", "--batch_size", "--size", "--expression_scale", "--input_yaw", "--input_pitch",
    "--input_roll", "--enhancer", "--background_enhancer", "--cpu", "--still", "--preprocess", "--verbose",
]  # fmt: skip
OUR_FLAGS = [
    "--seed", "--face_detector", "--face_index", "--idle_seconds", "--no_blink", "--output", "--gfpgan_dir",
    "--device", "--dtype", "--pairs", "--keep_partial", "--ref_video", "--ref_mode",
]  # fmt: skip


def _args(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_both_spellings_parse_the_same():
    underscore = _args(
        "--source_image", "a.png", "--driven_audio", "b.wav", "--pose_style", "7", "--batch_size", "3",
        "--expression_scale", "1.5", "--input_yaw", "-10", "20", "--ref_eyeblink", "r.mp4",
        "--checkpoint_dir", "ck", "--result_dir", "out", "--face_index", "1", "--idle_seconds", "2",
        "--no_blink", "--background_enhancer", "none", "--gfpgan_dir", "g", "--keep_partial",
    )  # fmt: skip
    dashed = _args(
        "--source-image", "a.png", "--driven-audio", "b.wav", "--pose-style", "7", "--batch-size", "3",
        "--expression-scale", "1.5", "--input-yaw", "-10", "20", "--ref-eyeblink", "r.mp4",
        "--checkpoint-dir", "ck", "--result-dir", "out", "--face-index", "1", "--idle-seconds", "2",
        "--no-blink", "--background-enhancer", "none", "--gfpgan-dir", "g", "--keep-partial",
    )  # fmt: skip
    assert vars(underscore) == vars(dashed)
    assert underscore.driven_audio == ["b.wav"] and underscore.input_yaw == [-10.0, 20.0]
    assert underscore.pose_style == 7 and underscore.expression_scale == 1.5 and underscore.no_blink


def test_options_built_from_flags():
    args = _args(
        "--source_image", str(PICTURE), "--driven_audio", str(AUDIO), "--still", "--preprocess", "full",
        "--pose_style", "12", "--seed", "5", "--input_pitch", "3", "--enhancer", "None", "--no_blink",
        "--face_detector", "dlib",
    )  # fmt: skip
    (job,) = cli.collect_jobs(args)
    opts = cli.options_for(job, args)
    assert opts.source == str(PICTURE) and opts.driven_audio == str(AUDIO)
    assert opts.still and opts.preprocess == "full" and opts.pose_style == 12 and opts.seed == 5
    assert opts.input_pitch == (3.0,) and opts.input_yaw is None
    assert opts.enhancer == "none" and not opts.use_blink and opts.face_detector == "dlib"


@pytest.mark.parametrize(
    ("flags", "video", "mode"),
    [
        (["--ref_eyeblink", "v.mp4"], "v.mp4", "blink"),
        (["--ref_pose", "v.mp4"], "v.mp4", "pose"),
        (["--ref_pose", "v.mp4", "--ref_eyeblink", "v.mp4"], "v.mp4", "pose+blink"),
        (["--ref_video", "w.mp4", "--ref_mode", "all"], "w.mp4", "all"),
    ],
)
def test_reference_flags(flags, video, mode):
    args = _args("--source_image", str(PICTURE), "--driven_audio", str(AUDIO), *flags)
    opts = cli.options_for(cli.collect_jobs(args)[0], args)
    assert (opts.ref_video, opts.ref_mode) == (video, mode)


def test_different_reference_videos_for_blinks_and_pose():
    args = _args("--source_image", str(PICTURE), "--driven_audio", str(AUDIO), "--ref_pose", "a.mp4",
                 "--ref_eyeblink", "b.mp4")  # fmt: skip
    opts = cli.options_for(cli.collect_jobs(args)[0], args)
    assert (opts.ref_video, opts.ref_mode, opts.ref_pose_video) == ("b.mp4", "pose+blink", "a.mp4")
    args = _args("--source_image", str(PICTURE), "--driven_audio", str(AUDIO), "--ref_pose", "a.mp4",
                 "--ref_video", "b.mp4")  # fmt: skip
    with pytest.raises(InputError, match="not both"):
        cli.options_for(cli.collect_jobs(args)[0], args)


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    parser = cli.build_parser()
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in out, flag
        if action.option_strings and action.dest not in ("help", "version"):
            assert action.help, f"{action.dest} has no help text"
    for flag in OFFICIAL_FLAGS + OUR_FLAGS:
        assert flag in out, flag
        if "_" in flag:
            assert flag.replace("_", "-") in out, flag


def test_module_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "sadtalker_ext", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--driven_audio" in res.stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--pose_style", "99"], "pose_style"),
        (["--pose_style", "abc"], "pose_style"),
        (["--size", "300"], "size"),
        (["--expression_scale", "9"], "expression_scale"),
        (["--batch_size", "0"], "batch_size"),
        (["--preprocess", "zoom"], "preprocess"),
        (["--input_yaw", "200"], "input_yaw"),
        (["--seed", "-1"], "seed"),
        (["--enhancer", "magic"], "enhancer"),
        (["--cpu", "--dtype", "float16"], "float32"),
        (["--output", "a.mp4", "--driven_audio", str(AUDIO), str(AUDIO)], "--output"),
    ],
)
def test_bad_values_give_one_line_and_nonzero(capsys, argv, needle):
    base = ["--source_image", str(PICTURE), "--driven_audio", str(AUDIO)]
    try:
        code = cli.main(base + argv)
    except SystemExit as exc:  # argparse-level errors
        code = exc.code
    assert code not in (0, None)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err


def test_missing_inputs_are_reported(capsys, tmp_path):
    assert cli.main(["--source_image", str(tmp_path / "nope.png"), "--driven_audio", str(AUDIO)]) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["--source_image", str(PICTURE)]) == 2
    assert "--driven_audio" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "expected", "absent"),
    [
        (
            [],
            [
                "SadTalker_V0.0.2_256.safetensors",
                "mapping_00229-model.pth.tar",
                "detection_Resnet50_Final.pth",
                "alignment_WFLW_4HG.pth",
            ],
            ["mapping_00109"],
        ),
        (
            ["--preprocess", "full", "--size", "512", "--face_detector", "dlib"],
            ["SadTalker_V0.0.2_512.safetensors", "mapping_00109-model.pth.tar"],
            ["detection_Resnet50", "_256."],
        ),
    ],
)
def test_missing_weights_message(capsys, tmp_path, extra, expected, absent):
    ck, gf = tmp_path / "ck", tmp_path / "gf"
    argv = ["--source_image", str(PICTURE), "--driven_audio", str(AUDIO), "--checkpoint_dir", str(ck),
            "--gfpgan_dir", str(gf), "--result_dir", str(tmp_path / "out"), *extra]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    for name in expected:
        assert name in err, name
    for name in absent:
        assert name not in err, name
    assert "python -m sadtalker_ext.download" in err
    assert str(ck) in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_pairs_file(tmp_path):
    (tmp_path / "pics").mkdir()
    pic = tmp_path / "pics" / "a.png"
    pic.write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\n\npics/a.png\t{AUDIO}\n{pic}\t\n", encoding="utf-8")
    jobs = cli.read_pairs(lst)
    assert jobs == [cli.Job(pic, AUDIO), cli.Job(pic, None)]
    bad = tmp_path / "bad.txt"
    bad.write_text("a\tb\tc\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.txt:1"):
        cli.read_pairs(bad)


def test_folders_pair_every_picture_with_every_recording(tmp_path):
    pics, auds = tmp_path / "p", tmp_path / "a"
    pics.mkdir()
    auds.mkdir()
    for name in ("x.png", "y.jpg", "notes.txt"):
        (pics / name).write_bytes(b"")
    for name in ("1.wav", "2.mp3"):
        (auds / name).write_bytes(b"")
    jobs = cli.collect_jobs(_args("--source_image", str(pics), "--driven_audio", str(auds)))
    assert [(j.picture.name, j.audio.name) for j in jobs] == [
        ("x.png", "1.wav"), ("x.png", "2.mp3"), ("y.jpg", "1.wav"), ("y.jpg", "2.mp3"),
    ]  # fmt: skip


class _FakeTalker:
    """Stands in for the pipeline: records calls, fails the job whose picture is named 'bad'."""

    instances: ClassVar[list[_FakeTalker]] = []

    def __init__(self, **kw):
        self.kw = kw
        self.calls = []
        self.precision_advice = f"advice for {kw.get('dtype')} on {kw.get('device')}"
        _FakeTalker.instances.append(self)

    def check_weights(self, options):
        pass

    def generate(self, options, progress=None, cancel=None, on_exists=None):
        self.calls.append(options)
        if progress is not None:
            progress("render", 1, 2)
            progress("render", 2, 2)
        if Path(options.source).stem == "bad":
            raise InputError("no face was detected in the source picture")
        out = Path(options.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"mp4")
        return Result(out, None, options.seed or 1, 2, {"total": 0.1})


def test_batch_goes_on_after_a_failure(monkeypatch, tmp_path, capsys):
    import sadtalker_ext.pipeline as pipeline

    _FakeTalker.instances.clear()
    monkeypatch.setattr(pipeline, "SadTalker", _FakeTalker)
    pics = tmp_path / "pics"
    pics.mkdir()
    for name in ("a.png", "bad.png", "c.png"):
        (pics / name).write_bytes(b"")
    out = tmp_path / "out"
    code = cli.main(["--source_image", str(pics), "--driven_audio", str(AUDIO), "--result_dir", str(out),
                     "--seed", "3", "--no_progress", "--cpu"])  # fmt: skip
    assert code == 1
    assert len(_FakeTalker.instances) == 1  # models loaded once for all jobs
    talker = _FakeTalker.instances[0]
    assert [Path(o.source).name for o in talker.calls] == ["a.png", "bad.png", "c.png"]
    assert talker.kw["device"] == "cpu" and talker.kw["winograd"] is True
    made = sorted(p.name for p in out.iterdir())
    assert made == ["a__RD_Radio31_000.mp4", "c__RD_Radio31_000.mp4"]
    captured = capsys.readouterr()
    assert "done: 2 of 3 videos made" in captured.out
    assert "bad.png" in captured.err and "no face was detected" in captured.err


def test_no_winograd_flag_reaches_the_pipeline(monkeypatch, tmp_path, capsys):
    import sadtalker_ext.pipeline as pipeline

    _FakeTalker.instances.clear()
    monkeypatch.setattr(pipeline, "SadTalker", _FakeTalker)
    code = cli.main(["--source_image", str(PICTURE), "--driven_audio", str(AUDIO), "--result_dir",
                     str(tmp_path), "--no-winograd", "--no_progress", "--cpu", "--dtype", "bfloat16"])  # fmt: skip
    assert code == 0
    assert _FakeTalker.instances[0].kw["winograd"] is False
    # the pipeline's precision advice for this CPU is shown once, on stderr
    assert capsys.readouterr().err.count("note: advice for bfloat16 on cpu") == 1


def test_output_names_do_not_collide(tmp_path):
    args = _args("--source_image", str(PICTURE), "--driven_audio", str(AUDIO), "--result_dir", str(tmp_path))
    (tmp_path / "full3__RD_Radio31_000.mp4").write_bytes(b"")
    taken: set[Path] = set()
    job = cli.Job(PICTURE, AUDIO)
    first = cli.output_path(job, args, taken)
    second = cli.output_path(job, args, taken)
    assert first.name == "full3__RD_Radio31_000-2.mp4" and second.name == "full3__RD_Radio31_000-3.mp4"
