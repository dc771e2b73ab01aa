"""Batches on a real Ray cluster (``--cluster``): one local cluster on loopback for the whole module (2 CPUs,
no dashboard), reduced-width stand-in weights, dlib landmarks, videos of a few frames.

Each batch runs through the real command line process (a driver joining the test's cluster by its address)
or, where the test must act while jobs run (killing a worker), through :func:`sadtalker_ext.cluster.run_batch`
in this process. Videos are compared with the single-process command line's for the same jobs and seed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image

from sadtalker_ext.cluster import ClusterConfig, WorkerSettings, run_batch
from sadtalker_ext.cluster.resume import find_done
from sadtalker_ext.options import GenerationOptions
from sadtalker_ext.video import read_frames
from tests.conftest import e2e_standin_folder

REPO = Path(__file__).resolve().parent.parent
SR, FPS = 16000, 25
SEED = 7
PICTURES = ("face.png", "face_b.png")
AUDIOS = ("speech.wav", "speech3.wav")
LONG = ("face.png", "long.wav")
"""The job a worker is killed in: long enough (12 frames) to be caught while it renders."""
WORKER_CLASS = "ClusterWorker"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Stand-in checkpoints, an empty face-model folder, two face pictures (the e2e picture and its mirror
    image), a picture without a face, recordings of 2, 3 and 12 frames."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("cluster")
    wav = e2e_standin_folder(root)
    picture = np.asarray(Image.open(root / "face.png"))
    Image.fromarray(np.ascontiguousarray(picture[:, ::-1])).save(root / "face_b.png")
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(root / "wall.png")
    for name, frames in (("speech.wav", 2), ("speech3.wav", 3), ("long.wav", 12)):
        samples = np.tile(wav, frames * SR // FPS // wav.shape[0] + 1)[: frames * SR // FPS + 100]
        sf.write(root / name, samples, SR, subtype="FLOAT")
    return root, root / "ck"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster on loopback, started once; its GCS address. At the end the cluster is shut down
    and every process it started (GCS, raylet, workers) must be gone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Ray's notes on env vars and pydantic 1
        ray.init(
            num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
            logging_level="warning",
        )  # fmt: skip
    address = ray.get_runtime_context().gcs_address
    node = ray._private.worker._global_node  # the processes this init started
    pids = [info.process.pid for infos in node.all_processes.values() for info in infos]
    assert pids
    try:
        yield address
    finally:
        ray.shutdown()
        deadline = time.monotonic() + 30  # a hang guard, not a timing assertion
        while (alive := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive, f"Ray processes still running after shutdown: {alive}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")


def _common(env) -> list[str]:
    root, ck = env
    return [
        "--checkpoint_dir", str(ck), "--gfpgan_dir", str(root / "gf"), "--face_detector", "dlib",
        "--batch_size", "1", "--cpu", "--seed", str(SEED), "--no_progress",
    ]  # fmt: skip


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sadtalker_ext", *argv], cwd=REPO, capture_output=True, text=True, timeout=600,
        env=env,
    )  # fmt: skip


def _grid(env) -> list[str]:
    root, _ = env
    return [
        "--source_image", *[str(root / p) for p in PICTURES], "--driven_audio", *[str(root / a) for a in AUDIOS],
    ]  # fmt: skip


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _stem(picture: str, audio: str) -> str:
    return f"{Path(picture).stem}__{Path(audio).stem}"


@pytest.fixture(scope="module")
def single(env, tmp_path_factory):
    """The single-process command line's videos of the 4 grid jobs and the long job (one call, --pairs), with
    one thread like each worker (Ray gives an actor of 1 CPU ``OMP_NUM_THREADS=1``): the random stand-in
    weights amplify the float rounding of another thread split into visibly different frames."""
    root, _ = env
    out = tmp_path_factory.mktemp("single")
    pairs = out / "jobs.tsv"
    jobs = [(p, a) for p in PICTURES for a in AUDIOS] + [LONG]
    pairs.write_text("".join(f"{root / p}\t{root / a}\n" for p, a in jobs))
    threads = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = _cli("--pairs", str(pairs), "--result_dir", str(out / "videos"), *_common(env), env=threads)
    assert res.returncode == 0, res.stderr
    return out / "videos"


@pytest.fixture(scope="module")
def grid_run(env, cluster, tmp_path_factory):
    """One batch through ``--cluster ADDRESS --workers 2`` (a ``--pairs`` list): the 4 grid jobs with, third,
    a picture without a face. (process result, result folder)."""
    root, _ = env
    tmp = tmp_path_factory.mktemp("grid")
    jobs = [(p, a) for p in PICTURES for a in AUDIOS]
    jobs.insert(2, ("wall.png", "speech.wav"))
    pairs = tmp / "jobs.tsv"
    pairs.write_text("".join(f"{root / p}\t{root / a}\n" for p, a in jobs))
    out = tmp / "videos"
    res = _cli("--pairs", str(pairs), "--result_dir", str(out), "--cluster", cluster, "--workers", "2",
               "--max_retries", "2", *_common(env))  # fmt: skip
    return res, out


def _comparable_sidecar(path: Path) -> dict:
    """A sidecar with its output path reduced to the file name (the two runs write to different folders)."""
    side = json.loads(path.with_suffix(".json").read_text())
    side["options"]["output"] = Path(side["options"]["output"]).name
    return side


def test_batch_of_four_equals_the_single_process_command_line(grid_run, single):
    res, out = grid_run
    assert res.returncode == 1, res.stderr  # the picture without a face, below
    assert "2 workers (1 CPU, 0 GPU each)" in res.stderr
    stems = [_stem(p, a) for p in PICTURES for a in AUDIOS]
    assert _names(out) == sorted(f"{s}{ext}" for s in stems for ext in (".json", ".mp4"))
    for stem in stems:
        got, want = out / f"{stem}.mp4", single / f"{stem}.mp4"
        assert str(got) in res.stdout
        frames = read_frames(got)
        assert frames.shape[0] >= 2
        np.testing.assert_array_equal(frames, read_frames(want), err_msg=stem)
        side = _comparable_sidecar(got)
        assert side == _comparable_sidecar(want)
        assert side["seed"] == SEED and set(side["inputs_sha256"]) == {"source", "driven_audio"}


def test_a_picture_without_a_face_fails_alone_and_is_not_retried(grid_run):
    res, out = grid_run
    assert res.returncode == 1
    assert "[3/5] failed: wall.png + speech.wav: no face was detected in the source picture" in res.stderr
    assert "trying again" not in res.stderr
    assert "done: 4 of 5 videos made" in res.stdout and "1 failed" in res.stdout
    assert not any(p.name.startswith("wall") for p in out.iterdir())


def test_rerun_skips_what_was_made_a_changed_option_redoes_its_job_overwrite_replaces_it(
    env, cluster, grid_run
):
    root, _ = env
    _, out = grid_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = _cli(*_grid(env), "--result_dir", str(out), "--cluster", cluster, *_common(env))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("; skipped)") == 4 and "cluster:" not in again.stderr  # no worker started
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    one = ["--source_image", str(root / "face.png"), "--driven_audio", str(root / "speech.wav")]
    changed = _cli(
        *one, "--expression_scale", "0.5", "--result_dir", str(out), "--cluster", cluster, *_common(env)
    )
    assert changed.returncode == 0, changed.stderr
    redone = out / "face__speech-2.mp4"
    assert str(redone) in changed.stdout and "made before" not in changed.stdout
    assert json.loads(redone.with_suffix(".json").read_text())["options"]["expression_scale"] == 0.5
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before} == before
    # both settings are now found: each run skips its own video
    for extra in ([], ["--expression_scale", "0.5"]):
        res = _cli(*one, *extra, "--result_dir", str(out), "--cluster", cluster, *_common(env))
        assert res.returncode == 0 and "made before" in res.stdout, res.stderr
    assert len(list(out.iterdir())) == len(before) + 2

    # --overwrite makes it again and replaces that video (a new file under the same name), nothing else;
    # --fragmented reaches the worker
    inode = redone.stat().st_ino
    assert b"moof" not in redone.read_bytes()
    over = _cli(*one, "--expression_scale", "0.5", "--overwrite", "--fragmented", "--result_dir", str(out),
                "--cluster", cluster, *_common(env))  # fmt: skip
    assert over.returncode == 0, over.stderr
    assert str(redone) in over.stdout and "made before" not in over.stdout
    assert redone.stat().st_ino != inode and b"moof" in redone.read_bytes()
    assert len(list(out.iterdir())) == len(before) + 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in before} == before


def _worker_pids() -> dict[int, str]:
    """Pids of the live ClusterWorker actors, from Ray's actor table (GCS)."""
    actors = ray._private.state.actors()
    return {a["Pid"]: a["ActorID"] for a in actors.values() if a["ActorClassName"] == WORKER_CLASS and a["State"] == "ALIVE"}  # fmt: skip


def test_a_worker_killed_while_rendering_is_replaced_and_its_job_retried(env, cluster, single, tmp_path):
    root, ck = env
    out, stage = tmp_path / "videos", tmp_path / "stage"
    jobs = [
        GenerationOptions(
            source=str(root / p), driven_audio=str(root / a), seed=SEED, batch_size=1, face_detector="dlib",
            output=str(out / f"{_stem(p, a)}.mp4"), extra={"front_end": "cli"},
        )
        for p, a in (LONG, ("face_b.png", "speech.wav"), ("face.png", "speech3.wav"))
    ]  # fmt: skip
    settings = WorkerSettings(checkpoint_dir=str(ck), gfpgan_dir=str(root / "gf"), device="cpu")
    events, report = [], {}
    runner = threading.Thread(
        target=lambda: report.setdefault(
            "r", run_batch(jobs, ClusterConfig(workers=2, max_retries=2), settings, staging_dir=str(stage),
                           progress=events.append)
        ),
        daemon=True,
    )  # fmt: skip
    runner.start()
    long_stem = _stem(*LONG)
    deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
    victim = None
    while victim is None and runner.is_alive() and time.monotonic() < deadline:
        # the encoder's hidden video-only file appears once the long job's first frame is rendered
        for part in stage.glob(f"*/job-*/out/.{long_stem}.*.video.mp4"):
            pid = int(part.parts[len(stage.parts)].removeprefix("sadtalker-worker-").split("-")[0])
            if pid in _worker_pids():
                victim, job_folder = pid, part.parent.parent
        time.sleep(0.05)
    assert victim is not None, f"the long job was not seen rendering: {events}"
    # the worker renders from the copies the driver sent (bytes through the object store), not our paths
    for field, name in (("source", LONG[0]), ("driven_audio", LONG[1])):
        assert (job_folder / "in" / field / name).read_bytes() == (root / name).read_bytes()
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=600)
    assert not runner.is_alive()
    result = report["r"]
    assert [o.status for o in result.outcomes] == ["done"] * 3, [(o.status, o.error) for o in result.outcomes]
    long_outcome = result.outcomes[0]
    assert long_outcome.tries == 2 and long_outcome.worker_pid != victim
    assert [e.kind for e in events].count("retry") == 1
    assert all(o.tries == 1 for o in result.outcomes[1:])
    for outcome in result.outcomes:
        name = outcome.path.name
        np.testing.assert_array_equal(read_frames(outcome.path), read_frames(single / name), err_msg=name)
        assert _comparable_sidecar(outcome.path) == _comparable_sidecar(single / name)
    assert _names(out) == sorted(f"{_stem(p, a)}{ext}" for p, a in (LONG, ("face_b.png", "speech.wav"),
                                 ("face.png", "speech3.wav")) for ext in (".json", ".mp4"))  # fmt: skip
    assert list(stage.iterdir()) == []  # staging folders: the dead worker's and the others' removed
    assert victim not in _worker_pids()


def test_resume_compares_contents_and_settings_not_paths(env, single, tmp_path):
    """A copy of an input under another name still matches its video; other settings or content do not."""
    root, _ = env
    video = single / "face__speech.mp4"
    copy = tmp_path / "renamed.png"
    copy.write_bytes((root / "face.png").read_bytes())
    opts = GenerationOptions(
        source=str(copy), driven_audio=str(root / "speech.wav"), seed=SEED, batch_size=1, face_detector="dlib"
    )
    digests = {"source": _sha(copy), "driven_audio": _sha(root / "speech.wav")}
    assert find_done(video, opts, digests, "float32") == video
    assert find_done(video, opts.replace(seed=None), digests, "float32") == video  # any seed will do
    assert find_done(video, opts.replace(seed=SEED + 1), digests, "float32") is None
    assert find_done(video, opts.replace(pose_style=3), digests, "float32") is None
    assert find_done(video, opts, digests, "bfloat16") is None
    assert find_done(video, opts, {**digests, "source": _sha(root / "face_b.png")}, "float32") is None


def _sha(path: Path) -> str:
    from sadtalker_ext.provenance import file_sha256

    return file_sha256(path)


def test_without_ray_the_cluster_flag_says_how_to_install_it(env, tmp_path):
    """A Python where ``import ray`` fails (a module named ``ray`` that raises ImportError on the path)."""
    fake = tmp_path / "noray"
    fake.mkdir()
    (fake / "ray.py").write_text("raise ImportError('No module named ray')\n")
    res = subprocess.run(
        [sys.executable, "-m", "sadtalker_ext", *_grid(env), "--result_dir", str(tmp_path / "v"),
         "--cluster", "auto", *_common(env)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO)])},
    )  # fmt: skip
    assert res.returncode == 1
    assert 'pip install "ray>=2.40"' in res.stderr and ".[cluster]" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("address", ["localhost", "ray://host", "http://h:1", "h:99999"])
def test_a_bad_cluster_address_is_refused_before_anything_runs(env, tmp_path, capsys, address):
    from sadtalker_ext import cli

    assert (
        cli.main([*_grid(env), "--result_dir", str(tmp_path / "v"), "--cluster", address, *_common(env)]) == 2
    )
    err = capsys.readouterr().err
    assert "HOST:PORT" in err and address in err
    assert not (tmp_path / "v").exists()


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process on this machine (from /proc)."""
    tree: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(proc.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _ray_daemons(pids: set[int]) -> set[int]:
    """Those of ``pids`` that are a running GCS server or raylet."""
    found = set()
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if cmd.endswith((b"/gcs_server", b"/raylet")) and _running(pid):
            found.add(pid)
    return found


@pytest.mark.parametrize(
    ("signum", "to_group", "code", "word"),
    [
        pytest.param(signal.SIGINT, True, 130, "interrupted", id="ctrl-c"),
        pytest.param(signal.SIGTERM, False, 143, "terminated", id="sigterm"),
    ],
)
def test_ctrl_c_cancels_the_running_job_and_stops_the_cluster_it_started(
    env, tmp_path, signum, to_group, code, word
):
    """``--cluster auto`` with no cluster announced here starts its own; Ctrl-C (SIGINT to the whole
    process group, as a terminal sends it) or SIGTERM (to the command) while a worker renders: exit 130 /
    143 as without a cluster, no video, no placeholder, no staging folder, and the cluster's GCS and raylet
    are gone. (Ray turns a KeyboardInterrupt raised while it waits into a plain one: SIGTERM must still
    say 143.)"""
    root, _ = env
    out, temp = tmp_path / "videos", Path(tempfile.gettempdir())
    proc = subprocess.Popen(
        [sys.executable, "-m", "sadtalker_ext", "--source_image", str(root / LONG[0]), "--driven_audio",
         str(root / LONG[1]), "--result_dir", str(out), "--cluster", "auto", "--cpus_per_worker", "2",
         *_common(env)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )  # fmt: skip
    long_stem = _stem(*LONG)
    deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
    staging = None  # the staging folder of this command's worker once it renders (others may run Ray too)
    while staging is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the batch ended before rendering (exit {proc.returncode}): {proc.communicate()}")
        ours = _descendants(proc.pid)
        for part in temp.glob(f"sadtalker-worker-*/job-*/out/.{long_stem}.*.video.mp4"):
            folder = part.parents[2]
            if int(folder.name.removeprefix("sadtalker-worker-").split("-")[0]) in ours:
                staging = folder
        time.sleep(0.05)
    daemons = _ray_daemons(ours)
    assert daemons  # it started a cluster of its own: GCS and raylet are its children
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, stderr
    assert word in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []
    deadline = time.monotonic() + 60  # a hang guard
    while (left := {p for p in daemons if _running(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray daemons left running: {left}"
    assert not staging.exists()


@pytest.mark.parametrize(("ray_version", "pydantic", "refused"), [
    ("2.60.0", "1.10.27", True), ("2.56.0", "1.10.2", True), ("2.55.1", "1.10.27", False),
    ("2.60.0", "2.8.2", False),
])  # fmt: skip
def test_a_ray_that_cannot_start_with_this_pydantic_is_named_at_once(
    monkeypatch, ray_version, pydantic, refused
):
    """Ray 2.56+ with pydantic 1 would time out starting a node after ~30 s (its dashboard agent refuses
    pydantic 1): the message says so and which Ray to install instead."""
    import importlib.metadata

    from sadtalker_ext.cluster import ClusterUnavailable, config

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: pydantic if name == "pydantic" else real(name)
    )
    if refused:
        with pytest.raises(ClusterUnavailable, match=r'pydantic 2.*"ray>=2\.40,<2\.56"'):
            config._check_pydantic(ray_version)
    else:
        config._check_pydantic(ray_version)


def test_cluster_flags_without_cluster_are_refused(env, tmp_path, capsys):
    from sadtalker_ext import cli

    argv = [*_grid(env), "--result_dir", str(tmp_path / "v"), *_common(env), "--workers", "2", "--shared_fs"]
    assert cli.main(argv) == 2
    assert (
        "--workers, --shared_fs only apply to a batch on a cluster: add --cluster" in capsys.readouterr().err
    )
    assert cli.main([*argv, "--cluster", "auto", "--keep_partial"]) == 2
    assert "--keep_partial does not apply to a batch on a cluster" in capsys.readouterr().err
    assert cli.main([*argv, "--cluster", "auto", "--stream_to", "-"]) == 2
    assert "--stream_to does not apply to a batch on a cluster" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_shared_file_system_mode_reads_and_writes_the_paths_themselves(env, cluster, single, tmp_path):
    """``--shared_fs`` with a result folder relative to the driver's working folder (not the workers'); with
    the progress bar on (one bar over the batch)."""
    root, _ = env
    with_bar = [a for a in _common(env) if a != "--no_progress"]
    res = subprocess.run(
        [sys.executable, "-m", "sadtalker_ext", "--source_image", str(root / "face.png"), "--driven_audio",
         str(root / "speech.wav"), "--result_dir", "videos", "--cluster", cluster, "--workers", "1",
         "--shared_fs", *with_bar],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "batch: 100%" in res.stderr and "1/1" in res.stderr and "done=1" in res.stderr
    video = tmp_path / "videos" / "face__speech.mp4"
    assert _names(tmp_path / "videos") == ["face__speech.json", "face__speech.mp4"]
    np.testing.assert_array_equal(read_frames(video), read_frames(single / video.name))
    side = json.loads(video.with_suffix(".json").read_text())
    assert side["options"]["output"] == str(Path("videos") / video.name)  # as the user named it
    assert _comparable_sidecar(video) == _comparable_sidecar(single / video.name)


def test_recorded_options_must_hold_the_same_settings(env, tmp_path):
    """What a worker records instead of its staged paths may differ in paths only: refused at once."""
    from sadtalker_ext.errors import InputError
    from sadtalker_ext.pipeline import SadTalker

    root, ck = env
    staged = GenerationOptions(source=str(root / "face.png"), driven_audio=str(root / "speech.wav"),
                               output=str(tmp_path / "a.mp4"), face_detector="dlib")  # fmt: skip
    talker = SadTalker(checkpoint_dir=ck, gfpgan_dir=root / "gf")
    with pytest.raises(InputError, match="same settings"):
        talker.generate(staged, recorded_as=staged.replace(source="elsewhere/face.png", pose_style=3))
    assert talker.loaded == [] and not (tmp_path / "a.mp4").exists()
