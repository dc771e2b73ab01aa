"""Benchmark section ``cluster``: jobs per hour for N short jobs, the sequential command line against a local
Ray cluster with 1 and 2 workers (``--cluster``), in one run, plus the scheduling overhead per job.

Run from the repository root (also ``python -m bench.bench --sections cluster``)::

    python -m bench.cluster --jobs 6 --seconds 0.2          # CPU, reduced-width stand-in weights

Each side makes the same N videos (N copies of one picture under different names, one recording of
``--seconds`` seconds; dlib landmarks, batch 1, fixed seed) from a cold start: the sequential side is one
``python -m sadtalker_ext --pairs`` process (its start and model load counted), each Ray side a fresh set of
workers (their start and model load counted) in a local cluster started once by this process (its start
reported apart, not counted). On a machine with CPUs
only, 1 worker gets every CPU as torch threads and 2 workers half each, so the comparison is all cores
against all cores. With GPUs (``--device cuda``), 1 worker gets one GPU and the widest run every GPU.

*Scheduling overhead per job*: on each worker, the seconds between the end of one job and the start of the
next (the driver noticing the result, writing the video, handing out the next job, Ray delivering it).

Figures from a loaded or shared machine are not comparable with others: every report names the load
average at its start and end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.report import save_report

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO.parent / "shared" / "media"
SR = 16000


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def make_inputs(folder: Path, jobs: int, seconds: float) -> tuple[Path, list[tuple[Path, Path]]]:
    """Reduced-width stand-in checkpoints and ``jobs`` (picture, recording) pairs in ``folder``."""
    import soundfile as sf

    from tests import standin

    ck = standin.write_reduced_checkpoints(folder / "ck", motion=standin.motion_tensors(0))
    wav, sr = sf.read(MEDIA / "RD_Radio31_000.wav", dtype="float32")
    assert sr == SR
    audio = folder / "speech.wav"
    sf.write(audio, np.resize(wav, int(seconds * SR)), SR, subtype="PCM_16")
    picture = (MEDIA / "full3.png").read_bytes()
    pairs = []
    for i in range(jobs):
        p = folder / f"face{i:02d}.png"
        p.write_bytes(picture)
        pairs.append((p, audio))
    return ck, pairs


def run_sequential(
    ck: Path, pairs: list[tuple[Path, Path]], out: Path, device: str, threads: int | None = None
) -> dict:
    """The single-process command line over all pairs (``threads``: its ``OMP_NUM_THREADS``, default
    unset): wall seconds."""
    listing = out.parent / f"{out.name}.tsv"
    listing.write_text("".join(f"{p}\t{a}\n" for p, a in pairs))
    cmd = [
        sys.executable, "-m", "sadtalker_ext", "--pairs", str(listing), "--result_dir", str(out),
        "--checkpoint_dir", str(ck), "--gfpgan_dir", str(out.parent / "gf"), "--face_detector", "dlib",
        "--batch_size", "1", "--seed", "1", "--no_progress", "--device", device,
    ]  # fmt: skip
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"sequential run failed: {res.stderr[-500:]}")
    side = "sequential CLI (1 process" + (f", OMP_NUM_THREADS={threads})" if threads else ")")
    return {"side": side, "workers": 1, "wall_s": round(wall, 2)}


def run_cluster(
    ck: Path, pairs: list[tuple[Path, Path]], out: Path, workers: int, cpus: float, gpus: float, device: str
) -> dict:
    """``run_batch`` with ``workers`` fresh workers on the cluster this process is connected to."""
    from sadtalker_ext.cluster import ClusterConfig, WorkerSettings, run_batch
    from sadtalker_ext.options import GenerationOptions

    jobs = [
        GenerationOptions(
            source=str(p), driven_audio=str(a), seed=1, batch_size=1, face_detector="dlib",
            output=str(out / f"{p.stem}__{a.stem}.mp4"),
        )
        for p, a in pairs
    ]  # fmt: skip
    config = ClusterConfig(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus)
    settings = WorkerSettings(checkpoint_dir=str(ck), gfpgan_dir=str(out.parent / "gf"), device=device)
    t0 = time.perf_counter()
    report = run_batch(jobs, config, settings, resume=False)
    wall = time.perf_counter() - t0
    bad = [o.error for o in report.outcomes if o.status != "done"]
    if bad:
        raise RuntimeError(f"cluster run failed: {bad[:2]}")
    gaps, firsts = [], []
    by_worker: dict[int, list] = {}
    for o in report.outcomes:
        by_worker.setdefault(o.worker_pid, []).append(o)
    for runs in by_worker.values():
        runs.sort(key=lambda o: o.started)
        firsts.append(runs[0].finished - runs[0].started)
        gaps += [b.started - a.finished for a, b in itertools.pairwise(runs)]
    job_s = [o.finished - o.started for o in report.outcomes]
    return {
        "side": f"Ray, {workers} worker{'s' if workers > 1 else ''} ({cpus:g} CPU, {gpus:g} GPU each)",
        "workers": report.workers,
        "wall_s": round(wall, 2),
        "job_s_median": round(statistics.median(job_s), 3),
        "first_job_s_mean": round(statistics.mean(firsts), 3),
        "overhead_per_job_s": round(statistics.mean(gaps), 4) if gaps else None,
        "overhead_samples": len(gaps),
    }


def bench_cluster(jobs: int = 6, seconds: float = 0.2, device: str = "cpu", work: Path | None = None) -> dict:
    """The ``cluster`` section: sequential, then Ray with 1 and with the widest worker count."""
    import ray

    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="sadtalker_bench_cluster_")
        work = Path(tmp.name)
    (work / "gf").mkdir(parents=True, exist_ok=True)
    ck, pairs = make_inputs(work, jobs, seconds)
    out: dict = {"jobs": jobs, "seconds_of_audio": seconds, "device": device, "load_avg_start": _load()}
    runs = [run_sequential(ck, pairs, work / "sequential", device)]
    # the same with one thread: on a shared, loaded CPU two OpenMP threads can be several times slower
    runs.append(run_sequential(ck, pairs, work / "sequential1", device, threads=1))
    cpus = os.cpu_count() or 1
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Ray's notes on env vars and pydantic 1
        ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 logging_level="warning")  # fmt: skip
    out["cluster_start_s"] = round(time.perf_counter() - t0, 2)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if device != "cpu" else 0
        widest = max(gpus, 1) if gpus else min(2, cpus)
        for n in dict.fromkeys((1, widest)):
            per_cpu = cpus / n if not gpus else 1
            runs.append(run_cluster(ck, pairs, work / f"ray{n}", n, per_cpu, 1.0 if gpus else 0.0, device))
    finally:
        ray.shutdown()
    for r in runs:
        r["jobs_per_hour"] = round(jobs * 3600.0 / r["wall_s"], 1)
        r["vs_sequential"] = round(runs[0]["wall_s"] / r["wall_s"], 3)
    out["runs"] = runs
    out["load_avg_end"] = _load()
    if tmp is not None:
        tmp.cleanup()
    return out


def cluster_markdown(r: dict) -> list[str]:
    """Markdown lines for a ``cluster`` section."""
    lines = [
        f"## Batches: sequential command line vs Ray ({r['jobs']} jobs of {r['seconds_of_audio']:g} s audio, "
        f"{r['device']}, REDUCED-width renderer)",
        "",
        "Wall from a cold start (models loaded once per process / worker, counted). Overhead per job: on each "
        "worker, seconds from the end of a job to the start of its next one.",
        "",
        "| run | workers | wall (s) | jobs/hour | vs sequential | median job (s) | overhead per job (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        overhead = x.get("overhead_per_job_s")
        lines.append(
            f"| {x['side']} | {x['workers']} | {x['wall_s']:.1f} | {x['jobs_per_hour']:.0f} | "
            f"{x['vs_sequential']:.2f}x | {x.get('job_s_median', '')} | "
            f"{'' if overhead is None else f'{overhead:.3f}'} |"
        )
    lines += [
        "",
        f"Starting the local Ray cluster (once, before the Ray runs; not in their wall): "
        f"{r.get('cluster_start_s', float('nan')):.1f} s. The sequential wall includes its process start.",
        f"Load average at start {r['load_avg_start']}, at end {r['load_avg_end']}.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=6, help="videos per side (default 6)")
    p.add_argument("--seconds", type=float, default=0.2, help="audio per video in seconds (default 0.2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (workers get one GPU each)")
    p.add_argument("--out", type=Path, help="also write cluster.json and cluster.md here")
    args = p.parse_args(argv)
    report = bench_cluster(args.jobs, args.seconds, args.device)
    text = "\n".join(cluster_markdown(report))
    if args.out:
        save_report(args.out, "cluster", report, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
