"""Nothing lost, nothing left behind: output names, refusals, signals and early folder checks, through the
real command line process (stand-in weights of reduced width, dlib landmarks, a few frames per video)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sadtalker_ext.errors import InputError
from sadtalker_ext.options import GenerationOptions
from sadtalker_ext.pipeline import SadTalker
from sadtalker_ext.video import probe, read_frames
from tests import standin
from tests.conftest import e2e_standin_folder

REPO = Path(__file__).resolve().parent.parent
SR, FPS = 16000, 25


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Stand-in checkpoints (tiny renderer), an empty face-model folder, the e2e picture, a 2-frame and a
    long recording."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("output_safety")
    wav = e2e_standin_folder(root)
    sf.write(root / "speech.wav", wav[: 2 * SR // FPS + 100], SR, subtype="FLOAT")
    long_wav = np.tile(wav, 60 * SR // FPS // wav.shape[0] + 1)[: 60 * SR // FPS]
    sf.write(root / "long.wav", long_wav, SR, subtype="FLOAT")
    return root, root / "ck"


def _argv(env, audio: str = "speech.wav", *extra: str) -> list[str]:
    root, ck = env
    return [
        sys.executable, "-m", "sadtalker_ext", "--source_image", str(root / "face.png"),
        "--driven_audio", str(root / audio), "--checkpoint_dir", str(ck), "--gfpgan_dir", str(root / "gf"),
        "--face_detector", "dlib", "--batch_size", "1", "--cpu", *extra,
    ]  # fmt: skip


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)


def _printed_video(stdout: str) -> Path:
    (line,) = [ln for ln in stdout.splitlines() if ".mp4" in ln]
    return Path(line.split("  (")[0])


def test_two_runs_into_one_folder_keep_both_videos_and_output_is_never_overwritten(env, tmp_path):
    out = tmp_path / "out"
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    runs = [
        subprocess.Popen(
            [*_argv(env), "--result_dir", str(out), "--seed", str(seed), "--no_progress"], cwd=REPO, **pipes
        )
        for seed in (1, 2)
    ]
    results = [(p.wait(timeout=900), *p.communicate()) for p in runs]
    for code, _, err in results:
        assert code == 0, err
    paths = [_printed_video(stdout) for _, stdout, _ in results]
    assert len(set(paths)) == 2
    assert {p.name for p in paths} == {"face__speech.mp4", "face__speech-2.mp4"}
    # each printed path holds the video of its own run (seed), with its own sidecar
    for seed, path in zip((1, 2), paths, strict=True):
        assert probe(path).settings["seed"] == seed
        assert json.loads(path.with_suffix(".json").read_text())["seed"] == seed
    assert sorted(p.name for p in out.iterdir()) == [
        "face__speech-2.json", "face__speech-2.mp4", "face__speech.json", "face__speech.mp4",
    ]  # fmt: skip


def test_output_that_exists_is_refused_unless_overwrite(env, tmp_path):
    target = tmp_path / "mine.mp4"
    target.write_bytes(b"precious")
    refused = _run([*_argv(env), "--output", str(target), "--seed", "3", "--no_progress"])
    assert refused.returncode == 2
    assert str(target) in refused.stderr and "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sorted(tmp_path.iterdir()) == [target] and target.read_bytes() == b"precious"

    replaced = _run([*_argv(env), "--output", str(target), "--seed", "3", "--overwrite", "--no_progress"])
    assert replaced.returncode == 0, replaced.stderr
    assert _printed_video(replaced.stdout) == target
    assert probe(target).settings["seed"] == 3
    assert json.loads(target.with_suffix(".json").read_text())["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.json", "mine.mp4"]


def _start_rendering(env, out: Path, *extra: str) -> subprocess.Popen:
    """The CLI in its own session (like a terminal's foreground job), held mid-video (``tests/frame_gate``:
    its first frames are in the encoder, it renders no further) until the test signals it."""
    held = out.parent / "held"
    argv = _argv(env, "long.wav")
    proc = subprocess.Popen(
        [argv[0], "-m", "tests.frame_gate", str(held), "--", *argv[3:], "--result_dir", str(out), "--seed", "4",
         "--no_progress", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600  # a hang guard, not a timing assertion
    while not held.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out_text, err = proc.communicate()
            pytest.fail(f"the CLI ended before rendering (exit {proc.returncode}): {out_text} {err}")
        time.sleep(0.1)
    assert any(p.name.endswith(".video.mp4") for p in out.iterdir())  # the encoder has frames
    return proc


def test_ctrl_c_to_the_process_group_keeps_a_partial_video(env, tmp_path):
    out = tmp_path / "out"
    proc = _start_rendering(env, out, "--keep_partial")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "could not keep a partial video" not in err
    assert sorted(p.name for p in out.iterdir()) == ["face__long.partial.mp4"]
    part = out / "face__long.partial.mp4"
    assert str(part) in err
    info = probe(part)
    assert info.settings["partial"] is True and 1 <= info.num_frames < 60
    assert info.settings["num_frames"] == info.num_frames
    assert read_frames(part).shape[0] == info.num_frames


def test_sigterm_cleans_up_and_exits_143(env, tmp_path):
    out = tmp_path / "out"
    proc = _start_rendering(env, out)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert list(out.iterdir()) == []  # no hidden temp file, no placeholder under the final name


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_result_dir_problem_is_found_before_any_model_loads(tmp_path, where):
    """With an empty checkpoint folder a run that got past the inputs would report the missing weights:
    the folder problem must be reported instead."""
    afile = tmp_path / "afile"
    afile.write_bytes(b"keep me")
    result_dir = afile if where == "file" else afile / "sub"
    argv = [
        sys.executable, "-m", "sadtalker_ext", "--source_image", str(standin.MEDIA_DIR / "full3.png"),
        "--driven_audio", str(standin.MEDIA_DIR / "RD_Radio31_000.wav"), "--checkpoint_dir",
        str(tmp_path / "no_weights"), "--result_dir", str(result_dir), "--cpu",
    ]  # fmt: skip
    res = _run(argv)
    assert res.returncode == 2
    assert re.search(
        rf"output folder {re.escape(str(result_dir))}: {re.escape(str(afile))} is a file", res.stderr
    )
    assert "missing weight" not in res.stderr and "Traceback" not in res.stderr
    assert afile.read_bytes() == b"keep me"


def test_generate_checks_the_output_before_the_weights(tmp_path):
    """``SadTalker.generate`` (API, app): a folder problem or a taken --output is an InputError before
    anything loads (the checkpoint folder is empty)."""
    empty = SadTalker(checkpoint_dir=tmp_path / "none", gfpgan_dir=tmp_path / "none2")
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    base = {
        "source": str(standin.MEDIA_DIR / "full3.png"),
        "driven_audio": str(standin.MEDIA_DIR / "RD_Radio31_000.wav"),
        "face_detector": "dlib",
    }
    with pytest.raises(InputError, match="is a file"):
        empty.generate(GenerationOptions(**base, output=str(afile / "x.mp4")))
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"old")
    with pytest.raises(InputError, match="already exists"):
        empty.generate(GenerationOptions(**base, output=str(taken)))
    empty.result_dir = afile
    with pytest.raises(InputError, match="is a file"):
        empty.generate(GenerationOptions(**base))
    assert taken.read_bytes() == b"old" and not empty.loaded


def test_app_sigterm_during_a_generation_cleans_up_and_exits_143(env, tmp_path):
    """The standalone app process, stopped with SIGTERM while it renders (a request through gradio's HTTP
    API): the generation stops, its files are removed, the server closes, exit 143."""
    pytest.importorskip("gradio")
    import base64
    import socket
    import threading
    import urllib.request

    from sadtalker_ext.app import FORM_FIELDS

    root, ck = env
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "sadtalker_ext.app", "--port", str(port), "--checkpoint_dir", str(ck),
            "--gfpgan_dir", str(root / "gf"), "--result_dir", str(out), "--device", "cpu"]  # fmt: skip
    env_vars = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env_vars)  # fmt: skip

    def data_url(path: Path, mime: str) -> str:
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")

    form = {"source": data_url(root / "face.png", "image/png"),
            "driven_audio": {"name": "long.wav", "data": data_url(root / "long.wav", "audio/wav"), "is_file": False},
            "idle_mode": False, "idle_seconds": 5, "ref_video": None, "ref_mode": "pose", "preprocess": "crop",
            "still": False, "pose_style": 0, "expression_scale": 1.0, "size": 256, "batch_size": 1,
            "use_blink": True, "seed": 4, "input_yaw": "", "input_pitch": "", "input_roll": "",
            "face_detector": "dlib", "face_index": 0, "enhancer": "none", "background_enhancer": "none",
            "max_audio_seconds": 600}  # fmt: skip
    # + the "Play while generating" box (off) and its stream token: the page sends both
    body = json.dumps({"data": [*(form[name] for name in FORM_FIELDS), False, ""], "fn_index": 0}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/run/predict", data=body, headers={"Content-Type": "application/json"}
    )
    answers: list = []

    def post() -> None:
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                answers.append(response.read())
        except OSError as exc:  # the server goes away mid-request
            answers.append(exc)

    try:
        deadline = time.monotonic() + 600  # a hang guard, not a timing assertion
        while True:  # until the server answers
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5).close()
                break
            except OSError:
                time.sleep(0.5)
        poster = threading.Thread(target=post, daemon=True)
        poster.start()
        while not (out.is_dir() and any(p.name.endswith(".video.mp4") for p in out.iterdir())):
            alive = proc.poll() is None and poster.is_alive() and time.monotonic() < deadline
            assert alive, (answers, proc.communicate()[0] if proc.poll() is not None else "")
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        text = proc.communicate(timeout=600)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, text
    assert list(out.iterdir()) == []
