"""Benchmark of every generation stage, the renderer against the official per-step structure, and memory.

Run from the repository root::

    python -m bench.bench --quick --out bench/results            # CPU, stand-in weights
    python -m bench.bench --checkpoint_dir /models/SadTalker --device cuda --dtype float16
    python -m bench.bench --sections ratio --official /path/to/SadTalker   # vs the official code (CPU)

Sections (all written to ``<out>/bench.json`` and ``<out>/bench.md``):

* **load**: renderer networks, cold (first ``load_renderer_nets`` in this process: file read + build)
  and warm (second call: process cache); then two decoder calls (the first builds the Winograd kernels
  on a CPU) and the kernels' memory.
* **render**: renderer frames/s per size and batch size (``Renderer``: source work once, frames in
  batches), plus the per-generation ``prepare_source`` time. Each configuration renders only
  ``--frames`` frames; per-frame figures and frames/s are extrapolated from them (labelled so).
* **conv**: each 3x3 convolution of the SPADE decoder at batch 2 (random data, CPU float32): oneDNN's
  direct convolution vs Winograd F(4x4, 3x3), with their rounding against float64.
* **ratio**: ours against the baseline at 256, batch 2, ``--ratio_frames`` frames, ``--threads`` torch
  threads, CPU float32, alternated ``--repeats`` times in one run, each side in its own long-lived
  :mod:`bench.render_worker` process (models loaded once): wall and CPU s per frame, process peak RSS,
  the ratio per repeat, and the frames' max abs difference. Baseline: the **official code** when
  ``--official PATH`` (or ``$SADTALKER_OFFICIAL``) names an official SadTalker checkout (kept outside this
  repository; only the worker process gets it on its ``PYTHONPATH``): its ``AnimateFromCoeff`` loading
  from ``src/config/facerender.yaml``, ``get_facerender_data`` batch layout and ``make_animation``. Without
  it, :func:`bench.baseline.iter_official_structure` (our copy of the official per-step structure), and
  the report says that the ratio is against a copy.
* **stages**: one short generation through ``sadtalker_ext.pipeline.SadTalker`` (``full`` preprocess, so
  paste-back runs) with the reduced-width renderer; seconds per stage as the pipeline reports them.
* **memory**: peak RSS (and peak CUDA memory) of a child process per audio length, each one full
  generation through the pipeline with the reduced-width renderer (``crop`` preprocess).
* **cluster** (not in the default list; needs Ray): jobs/hour for N short jobs, the sequential command line
  against a local Ray cluster with 1 and 2 workers, and the scheduling overhead per job (``bench/cluster.py``).
* **resample**: the official audio resampler (resampy ``kaiser_best`` in numpy,
  ``sadtalker_ext.audio.resample``) on ``--resample_seconds`` of noise per input rate, and soxr HQ on the same
  samples; seconds per hour of audio extrapolated from it (labelled so).

Every report names the CPU model, its instruction sets (AVX2 / AVX-512 / AVX-512-BF16 / AMX from
``/proc/cpuinfo``), the kernel level torch picked (``torch.backends.cpu.get_cpu_capability()``) and the
load average. To measure the same on AVX2 kernels only (e.g. to compare with an AVX2 machine), set the
environment for the whole run; the worker processes inherit it::

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.bench --sections ratio --official PATH

(``ATEN_CPU_CAPABILITY`` limits ATen's own kernels, ``ONEDNN_MAX_CPU_ISA`` oneDNN's convolutions; the
machine line shows both.)

Weights: ``--checkpoint_dir`` (official files), else stand-in files built with ``tests/standin.py``
(fill.py values, official widths). The *reduced-width* renderer (3 keypoints, a few channels per layer,
official key names; motion and reconstruction tensors copied from the main checkpoint) is written next to
them; it drives the stage and memory runs, and its render times are not the official renderer's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.baseline import iter_official_structure
from bench.cluster import bench_cluster, cluster_markdown
from bench.report import save_report
from sadtalker_ext import checkpoints
from sadtalker_ext.precision import cpu_has_bfloat16
from sadtalker_ext.render.animate import Renderer, plan_render
from sadtalker_ext.render.loading import load_renderer_nets

ST256, ST512, MAP_CROP, MAP_FULL = (
    "SadTalker_V0.0.2_256.safetensors",
    "SadTalker_V0.0.2_512.safetensors",
    "mapping_00229-model.pth.tar",
    "mapping_00109-model.pth.tar",
)
REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO.parent / "shared" / "media"
SR, FPS = 16000, 25


# ------------------------------------------------------------------------------------------ helpers
def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed(out: dict, key: str, device: torch.device):
    """Wall seconds into ``out[key]``, CPU seconds of this process (all threads) into ``out[key + '_cpu']``.

    On a shared CPU the process CPU time is far less disturbed by other processes than wall time."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    yield
    sync(device)
    out[key] = time.perf_counter() - t0
    out[key + "_cpu"] = time.process_time() - c0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ weights
def conditioned_overrides() -> tuple[dict, str]:
    """The weight overrides of the parity set's first ``render_cond_*`` file (spectral-norm vectors and
    scaled heads that keep the renderer's RGB out of saturation, see the vector's ``.md``) and that file's
    name; ``({}, '')`` when the set has none (then fill.py's raw stand-ins saturate and frames compare
    poorly)."""
    from tests import standin

    for path in sorted(standin.parity_dir().glob("render_cond_*.npz")):
        with np.load(path, allow_pickle=False) as npz:
            overrides = standin.overrides_of(npz)
        if overrides:
            return overrides, path.name
    return {}, ""


def build_standins(folder: Path) -> tuple[Path, str]:
    """Official-width stand-in files (fill.py seed 0 + the well-conditioned overrides where the parity set
    has them) in the official formats; returns ``(folder, description)``."""
    from tests import standin

    overrides, source = conditioned_overrides()
    if overrides:
        folder = folder / f"cond-{standin.overrides_digest(overrides)}"
        what = f"fill.py seed 0 + the {len(overrides)} render_cond overrides of {source}"
    else:
        what = "fill.py seed 0 (no render_cond overrides in the parity set: saturated RGB)"
    log(f"building stand-in checkpoints in {folder} (official widths, {what})")
    folder.mkdir(parents=True, exist_ok=True)
    standin.build_checkpoints(folder, 0, overrides or None)
    return folder, f"stand-in files (tests/standin.py, official widths, {what})"


def weights_folder(checkpoint_dir: Path | None, standin_folder: Path) -> tuple[Path, str]:
    """``(folder, description)`` of the weights a benchmark runs on: the official files in ``checkpoint_dir``
    when given, else stand-ins built by :func:`build_standins` in ``standin_folder``."""
    if checkpoint_dir is not None:
        return checkpoint_dir, f"official files from {checkpoint_dir}"
    return build_standins(standin_folder)


def build_reduced(main_dir: Path, folder: Path) -> Path:
    """Reduced-width renderer (``tests.standin.TINY_*``) + the main checkpoint's motion/reconstruction tensors."""
    from tests import standin

    if (folder / ST256).is_file() and (folder / MAP_FULL).is_file():
        return folder
    log(f"building the reduced-width renderer checkpoint in {folder}")
    motion: dict[str, np.ndarray] = {}
    for prefix in standin.MOTION_PREFIXES:
        part = checkpoints.read_safetensors_prefix(main_dir / ST256, prefix)
        motion.update({f"{prefix}.{k}": v.numpy() for k, v in part.items()})
    return standin.write_reduced_checkpoints(folder, motion=motion)


# ------------------------------------------------------------------------------------------ inputs
def whole_batches(frames: int, batch_size: int) -> int:
    """``frames`` rounded up to a whole number of batches (at least one)."""
    return -(-max(frames, batch_size) // batch_size) * batch_size


def synthetic_coefficients(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed pseudo-random coefficients: source ``(1, 73)`` and target ``(frames, 70)``
    (expression ~0.3, small head angles)."""
    rng = np.random.default_rng(seed)
    src = np.zeros((1, 73), np.float32)
    src[0, :64] = rng.normal(0, 0.3, 64)
    src[0, 70:] = [1.0, 0.0, 0.0]
    tgt = np.zeros((frames, 70), np.float32)
    tgt[:, :64] = rng.normal(0, 0.3, (frames, 64))
    tgt[:, 64:67] = rng.normal(0, 0.1, (frames, 3))
    return src, tgt


def synthetic_plan(frames: int, batch_size: int, seed: int = 0):
    """A render plan from :func:`synthetic_coefficients`."""
    return plan_render(*synthetic_coefficients(frames, seed), batch_size=batch_size)


def source_image(size: int, device) -> torch.Tensor:
    from PIL import Image

    from sadtalker_ext.render.animate import source_image_tensor

    rgb = np.asarray(Image.open(MEDIA / "people_0.png").convert("RGB"))
    side = min(rgb.shape[:2])
    return source_image_tensor(rgb[:side, :side], size).to(device=device)


def wav_of(seconds: float, folder: Path) -> Path:
    """A wav of the given length: the shared speech sample repeated."""
    import soundfile as sf

    path = folder / f"speech_{seconds:g}s.wav"
    if not path.exists():
        wav, sr = sf.read(MEDIA / "RD_Radio31_000.wav", dtype="float32")
        assert sr == SR
        n = int(seconds * SR)
        sf.write(path, np.resize(wav, n), SR, subtype="PCM_16")
    return path


# ------------------------------------------------------------------------------------------ sections
def bench_load(ckpt: Path, sizes, device, dtype) -> list[dict]:
    rows = []
    for size in sizes:
        checkpoints.clear_cache()
        t: dict[str, float] = {}
        with timed(t, "cold", device):
            load_renderer_nets(ckpt, size, "crop", device, dtype)
        with timed(t, "warm", device):
            nets = load_renderer_nets(ckpt, size, "crop", device, dtype)
        row = {"size": size, "cold_s": t["cold"], "warm_s": t["warm"]}
        first, second = decoder_call(nets, size, device), decoder_call(nets, size, device)
        row["first_decoder_call_s"], row["second_decoder_call_s"] = first, second
        row["winograd_kernels_mb"] = winograd_kernel_mb(nets)
        rows.append(row)
        log(
            f"load {size}: cold {t['cold']:.2f} s, warm {t['warm'] * 1e3:.2f} ms; decoder call 1 {first:.2f} s, "
            f"2 {second:.2f} s, Winograd kernels {row['winograd_kernels_mb']:.0f} MiB"
        )
    checkpoints.clear_cache()
    return rows


def decoder_call(nets, size: int, device) -> float:
    """Seconds of one SPADE decoder call on a zero feature of batch 1 for ``size`` pictures."""
    dec = nets.generator.decoder
    t: dict[str, float] = {}
    with torch.inference_mode(), timed(t, "call", device):
        dec(torch.zeros(1, dec.cfg.input_nc, size // 4, size // 4, device=device))
    return t["call"]


def winograd_kernel_mb(nets) -> float:
    """Memory of the Winograd kernels built so far (:func:`sadtalker_ext.nets.blocks.set_winograd`)."""
    caches = [
        m.__dict__["_winograd_kernels"] for m in nets.generator.modules() if "_winograd_kernels" in m.__dict__
    ]
    return sum(c.nbytes() for c in caches) / 2**20


def warm_up(nets, image, device, *, baseline: bool = False) -> None:
    """On CUDA, one untimed 2-frame render first (kernel selection, allocator growth, lazy loading).
    On a CPU, one decoder call if the float32 decoder's Winograd kernels are not built yet (once per
    process; timed in the load section)."""
    if device.type == "cpu":
        dec = nets.generator.decoder
        if dec.winograd and dec.fc.weight.dtype == torch.float32 and not winograd_kernel_mb(nets):
            decoder_call(nets, image.shape[-1], device)
        return
    if device.type != "cuda":
        return
    plan = synthetic_plan(2, 2, seed=1)
    run_ours(nets, image, plan, device)
    if baseline:
        run_baseline(nets, image, plan, device)


def run_ours(nets, image, plan, device) -> dict[str, float]:
    renderer = Renderer(nets, device)
    t: dict[str, float] = {}
    with timed(t, "prepare", device):
        source = renderer.prepare_source(image, plan.source_row)
    with timed(t, "frames", device):
        for positions in plan.batches():
            renderer.render_frames(source, plan, positions)["prediction"].cpu()
    return t


def run_baseline(nets, image, plan, device) -> dict[str, float]:
    t: dict[str, float] = {}
    with timed(t, "frames", device):
        for _, frames in iter_official_structure(nets, image, plan, device):
            frames.cpu()
    t["prepare"] = t["prepare_cpu"] = 0.0
    return t


def bench_render(ckpt, args, device, dtype) -> list[dict]:
    """Official widths; ``--quick``: one generator call per configuration, size 512 at batch 1 only."""
    rows = []
    for size in args.sizes:
        nets = load_renderer_nets(ckpt, size, "crop", device, dtype)
        image = source_image(size, device)
        for bs in args.batch_sizes:
            if args.quick and size != 256 and bs != 1:
                continue
            frames = whole_batches(args.frames, bs)
            plan = synthetic_plan(frames, bs)
            warm_up(nets, image, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = run_ours(nets, image, plan, device)
            row = {
                "size": size,
                "batch_size": bs,
                "frames_rendered": frames,
                "prepare_s": t["prepare"],
                "s_per_frame": t["frames"] / frames,
                "frames_per_s": frames / t["frames"],
                "peak_rss_mb": peak_rss_mb(),
                "load_avg": load_average(),
            }
            if device.type == "cuda":
                row["peak_vram_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            rows.append(row)
            log(f"render {size} bs{bs}: {row['frames_per_s']:.3f} frames/s ({frames} frames)")
        checkpoints.clear_cache()
    return rows


OFFICIAL_ENV = "SADTALKER_OFFICIAL"
ISA_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512-BF16"), ("amx_tile", "AMX"))


def parse_cpuinfo(text: str) -> tuple[str, list[str]]:
    """CPU model name and the instruction sets of :data:`ISA_FLAGS` it has, from ``/proc/cpuinfo`` text."""
    model, flags = "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = " ".join(value.split())
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, [name for flag, name in ISA_FLAGS if flag in flags]


def machine_info(capability: str | None = None) -> dict:
    """CPU model, instruction sets, the ATen kernel level torch uses (``capability``: as a worker reported
    it; default this process's), the ISA environment overrides and the load average."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model, isa = parse_cpuinfo(text)
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "isa": isa,
        "torch_cpu_capability": capability or torch.backends.cpu.get_cpu_capability(),
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "load_avg": load_average(),
    }


def machine_line(info: dict) -> str:
    """One line naming the CPU, its instruction sets, what torch used and the load average."""
    forced = [f"{k}={info[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if info.get(k)]
    return (
        f"{info['cpu_model']} ({info['cpu_count']} CPUs; {' / '.join(info['isa']) or 'no AVX2'}); "
        f"torch CPU kernels {info['torch_cpu_capability']}"
        + (f" ({', '.join(forced)})" if forced else "")
        + f"; load average {' '.join(str(v) for v in info['load_avg'])}"
    )


def official_checkout(arg: str | Path | None) -> Path | None:
    """The official SadTalker checkout from ``--official`` or ``$SADTALKER_OFFICIAL`` (None: neither set).

    Raises ``SystemExit`` with what to do when the folder is not an official checkout."""
    value = arg if arg else os.environ.get(OFFICIAL_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    needed = path / "src" / "facerender" / "modules" / "make_animation.py"
    if not needed.is_file():
        raise SystemExit(
            f"--official / ${OFFICIAL_ENV}: {path} is not an official SadTalker checkout ({needed} is missing); "
            "clone https://github.com/OpenTalker/SadTalker outside this repository and pass its root folder"
        )
    return path


def baseline_label(checkout: Path | None, commit: str | None = None) -> str:
    """What the ratio's baseline is, in words."""
    if checkout is None:
        return (
            "our COPY of the official per-step structure (bench/baseline.py), not the official code: "
            f"the ratio is against a copy; pass --official PATH or set ${OFFICIAL_ENV} to time the real code"
        )
    return f"the official SadTalker code at {checkout}" + (f" (commit {commit[:12]})" if commit else "")


def write_ratio_inputs(folder: Path, frames: int) -> Path:
    """The shared inputs of both workers: the square picture, coefficients as ``.npz`` (ours) and as the
    official ``.mat`` files (``coeff_3dmm``); returns the picture path."""
    import scipy.io
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    src, tgt = synthetic_coefficients(frames)
    np.savez(folder / "coeffs.npz", source=src, target=tgt)
    scipy.io.savemat(folder / "source.mat", {"coeff_3dmm": src})
    scipy.io.savemat(folder / "target.mat", {"coeff_3dmm": tgt})
    rgb = np.asarray(Image.open(MEDIA / "people_0.png").convert("RGB"))
    side = min(rgb.shape[:2])
    picture = folder / "picture.png"
    Image.fromarray(np.ascontiguousarray(rgb[:side, :side])).save(picture)
    return picture


def worker_command(
    side: str,
    ckpt: Path,
    work: Path,
    picture: Path,
    checkout: Path | None,
    threads: int,
    *,
    size: int = 256,
    dtype: str = "float32",
) -> list[str]:
    """Argument list of one :mod:`bench.render_worker` process (``dtype``: side ours only)."""
    cmd = [sys.executable, "-m", "bench.render_worker", "--side", side, "--ckpt", str(ckpt)]
    cmd += ["--work", str(work), "--picture", str(picture), "--threads", str(threads), "--size", str(size)]
    if dtype != "float32":
        cmd += ["--dtype", dtype]
    if side == "official":
        cmd += ["--official", str(checkout)]
    return cmd


def worker_env(side: str, checkout: Path | None, threads: int) -> dict[str, str]:
    """The worker's environment: the official checkout on ``PYTHONPATH`` for the official side only."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    env.pop("PYTHONPATH", None)
    if side == "official":
        env["PYTHONPATH"] = str(checkout)
    return env


class Worker:
    """A long-lived :mod:`bench.render_worker` process: models loaded once, one JSON line per run."""

    def __init__(self, side: str, cmd: list[str], env: dict[str, str]) -> None:
        self.side = side
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.ready = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the {self.side} render worker ended (exit {code}); its error is above")
        return json.loads(line)

    def run(self, frames_out: Path) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": "run", "frames_out": str(frames_out)}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def frame_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Max abs difference of two float frame stacks in ``[0, 1]`` and the share of values above 1e-3."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max_abs_diff": float(diff.max()), "share_above_1e-3": float((diff > 1e-3).mean())}


def uint8_difference(reference: np.ndarray, frames: np.ndarray) -> dict:
    """Frames ``(T, 3, S, S)`` in [0, 1] as uint8 levels (``round(255 x)``) against a reference: the largest
    difference in levels, the share of values that differ, and that differ by more than 2 levels."""
    levels = np.abs(
        np.rint(np.clip(reference, 0, 1) * 255).astype(np.int16)
        - np.rint(np.clip(frames, 0, 1) * 255).astype(np.int16)
    )
    return {
        "max_levels": int(levels.max()),
        "share_differing": float((levels > 0).mean()),
        "share_above_2": float((levels > 2).mean()),
        "mean_levels": float(levels.mean()),
    }


def frame_differences(reference: np.ndarray, frames: np.ndarray) -> dict:
    """:func:`frame_difference` (floats) plus ``uint8``: :func:`uint8_difference`."""
    return {**frame_difference(reference, frames), "uint8": uint8_difference(reference, frames)}


def _side_figures(runs: list[dict], base: list[dict], n: int, ready: dict) -> dict:
    """Per-frame wall and CPU seconds, peak RSS and the baseline/side ratios of one side's repeats."""
    return {
        "s_per_frame": [t["wall_s"] / n for t in runs],
        "cpu_s_per_frame": [t["cpu_s"] / n for t in runs],
        "peak_rss_mb": max(t["peak_rss_mb"] for t in runs),
        "ratio": [b["wall_s"] / o["wall_s"] for b, o in zip(base, runs, strict=True)],
        "cpu_ratio": [b["cpu_s"] / o["cpu_s"] for b, o in zip(base, runs, strict=True)],
        "load_s": ready["load_s"],
    }


def bench_ratio(ckpt, args, device, dtype) -> dict:
    """Ours vs the baseline, each in its own long-lived worker process, alternated in one run
    (``--ratio_size`` 256 or 512, batch 2, official widths, CPU; baseline float32). Ours in float32, and in
    bfloat16 too where the CPU has AMX (:func:`.precision.cpu_has_bfloat16`; ``--ratio_no_bf16`` leaves it out,
    e.g. with ``ONEDNN_MAX_CPU_ISA`` below AMX); each side's frames compared with the baseline's as floats and as
    uint8 levels. Baseline: the official code from ``--official`` / ``$SADTALKER_OFFICIAL``, else our
    structure copy (said so in the report)."""
    if device.type != "cpu" or dtype != torch.float32:
        return {
            "skipped": "the official-vs-ours ratio runs on the CPU in float32 (bfloat16 is added by itself)"
        }
    checkout = official_checkout(args.official)
    commit = None
    if checkout is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            commit = subprocess.run(
                ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
            ).stdout.strip()
    base_side = "official" if checkout is not None else "copy"
    size = args.ratio_size
    sides = {base_side: (base_side, "float32"), "ours": ("ours", "float32")}
    if cpu_has_bfloat16() and not args.ratio_no_bf16:
        sides["ours bfloat16"] = ("ours", "bfloat16")
    work = Path(tempfile.mkdtemp(prefix="sadtalker_ratio_"))
    picture = write_ratio_inputs(work, args.ratio_frames)
    workers: dict[str, Worker] = {}
    runs: dict[str, list[dict]] = {label: [] for label in sides}
    try:
        for label, (side, side_dtype) in sides.items():
            log(f"ratio: starting the {label} worker")
            env = worker_env(side, checkout, args.threads)
            cmd = worker_command(
                side, Path(ckpt), work, picture, checkout, args.threads, size=size, dtype=side_dtype
            )
            workers[label] = Worker(label, cmd, env)
        for r in range(args.repeats):
            for label in sides:
                t = workers[label].run(work / f"frames_{label.replace(' ', '_')}_{r}.npy")
                t["load_avg"] = load_average()
                runs[label].append(t)
                log(
                    f"ratio repeat {r}: {label} {t['wall_s'] / t['frames']:.2f} s/frame wall, "
                    f"{t['cpu_s'] / t['frames']:.2f} CPU s/frame, peak RSS {t['peak_rss_mb']:.0f} MiB, "
                    f"load {t['load_avg']}"
                )
        base_frames = np.load(work / f"frames_{base_side}_0.npy")
        diffs = {
            label: frame_differences(base_frames, np.load(work / f"frames_{label.replace(' ', '_')}_0.npy"))
            for label in sides
            if label != base_side
        }
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(work, ignore_errors=True)
    n = args.ratio_frames
    base = runs[base_side]
    ours = _side_figures(runs["ours"], base, n, workers["ours"].ready)
    out = {
        "baseline": base_side,
        "baseline_label": baseline_label(checkout, commit),
        "size": size,
        "batch_size": 2,
        "frames": n,
        "repeats": args.repeats,
        "threads": args.threads,
        "machine": machine_info(workers["ours"].ready.get("cpu_capability")),
        "ours_malloc_reuse": bool(workers["ours"].ready.get("malloc_reuse")),
        "worker_capability": {k: w.ready.get("cpu_capability") for k, w in workers.items()},
        "load_s": {k: w.ready["load_s"] for k, w in workers.items()},
        "baseline_s_per_frame": [t["wall_s"] / n for t in base],
        "ours_s_per_frame": ours["s_per_frame"],
        "baseline_cpu_s_per_frame": [t["cpu_s"] / n for t in base],
        "ours_cpu_s_per_frame": ours["cpu_s_per_frame"],
        "baseline_peak_rss_mb": max(t["peak_rss_mb"] for t in base),
        "ours_peak_rss_mb": ours["peak_rss_mb"],
        "ratio": ours["ratio"],
        "cpu_ratio": ours["cpu_ratio"],
        "load_avg": [t["load_avg"] for t in runs["ours"]],
        **diffs["ours"],
    }
    out["ratio_median"] = statistics.median(out["ratio"])
    out["cpu_ratio_median"] = statistics.median(out["cpu_ratio"])
    if "ours bfloat16" in sides:
        out["bfloat16"] = {
            **_side_figures(runs["ours bfloat16"], base, n, workers["ours bfloat16"].ready),
            **diffs["ours bfloat16"],
        }
    return out


def ratio_markdown(r: dict) -> list[str]:
    """The official-vs-ours table of :func:`bench_ratio`."""
    if "skipped" in r:
        return ["## Renderer vs the official code", "", f"Skipped: {r['skipped']}.", ""]
    med = statistics.median
    name = "official" if r["baseline"] == "official" else "copy of the official structure"
    rss_b = r["baseline_peak_rss_mb"]

    def reps(values: list[float]) -> str:
        return " / ".join(f"{v:.2f}" for v in values)

    def side_table(
        dtype: str, s_per_frame, cpu_s_per_frame, rss: float, ratio, cpu_ratio, diff: dict
    ) -> list[str]:
        rows = [
            "",
            f"| | {name} float32 | ours {dtype} | {name} / ours |",
            "|---|---:|---:|---:|",
            f"| wall s per frame (median) | {med(r['baseline_s_per_frame']):.2f} | {med(s_per_frame):.2f} | "
            f"{med(ratio):.2f}x (repeats {reps(ratio)}) |",
            f"| CPU s per frame (median) | {med(r['baseline_cpu_s_per_frame']):.2f} | "
            f"{med(cpu_s_per_frame):.2f} | {med(cpu_ratio):.2f}x (repeats {reps(cpu_ratio)}) |",
            f"| process peak RSS | {rss_b:.0f} MiB | {rss:.0f} MiB | ours uses {100 * (rss / rss_b - 1):+.0f} % |",
            f"| frames, max abs diff (float, [0, 1]) | | | {diff['max_abs_diff']:.1e} "
            f"({100 * diff['share_above_1e-3']:.2f} % of values above 1e-3) |",
        ]
        u8 = diff.get("uint8")  # (reports before 2026-12-06 have no uint8 row)
        if u8:
            rows.append(
                f"| frames as uint8 | | | max {u8['max_levels']} levels, {100 * u8['share_differing']:.2f} % of "
                f"values differ, {100 * u8['share_above_2']:.3f} % by more than 2 |"
            )
        return rows

    lines = [
        f"## Renderer vs {name} ({r.get('size', 256)}, batch {r['batch_size']}, {r['threads']} torch threads, "
        f"{name} in float32, same run)",
        "",
        f"Baseline: {r['baseline_label']}.",
        f"Machine: {machine_line(r['machine'])} (worker kernels: "
        + ", ".join(f"{k} {v}" for k, v in r["worker_capability"].items())
        + ").",
        f"{r['frames']} frames per repeat, {r['repeats']} repeats alternated, each side in its own long-lived "
        "process (models loaded once; ours includes its per-call prepare_source)"
        + (
            "; ours with the CLI's allocator setting (freed memory kept for reuse)."
            if r.get("ours_malloc_reuse")
            else "; ours with glibc's default allocator settings (SADTALKER_MALLOC=default)."
        ),
    ]
    lines += side_table(
        "float32",
        r["ours_s_per_frame"],
        r["ours_cpu_s_per_frame"],
        r["ours_peak_rss_mb"],
        r["ratio"],
        r["cpu_ratio"],
        r,
    )
    bf = r.get("bfloat16")
    if bf:
        lines += side_table(
            "bfloat16",
            bf["s_per_frame"],
            bf["cpu_s_per_frame"],
            bf["peak_rss_mb"],
            bf["ratio"],
            bf["cpu_ratio"],
            bf,
        )
    lines += [
        "",
        "Load average after each repeat: " + ", ".join(str(v[0]) if v else "?" for v in r["load_avg"]) + ".",
        "",
    ]
    return lines


def bench_macs(ckpt, args, device, dtype) -> dict:
    """Multiply-adds (convolutions and matrix products, ``torch.utils.flop_counter``) per 256 frame:
    ours (per-frame work, and the one-off source work) vs the official per-step structure, batch 2."""
    from torch.utils.flop_counter import FlopCounterMode

    nets = load_renderer_nets(ckpt, 256, "crop", device, dtype)
    image = source_image(256, device)
    plan = synthetic_plan(2, 2)

    def gmac(fn) -> float:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 2e9

    renderer = Renderer(nets, device)
    source = renderer.prepare_source(image, plan.source_row)
    (positions,) = plan.batches()
    out = {
        "ours_prepare_gmac": gmac(lambda: renderer.prepare_source(image, plan.source_row)),
        "ours_gmac_per_frame": gmac(lambda: renderer.render_frames(source, plan, positions)) / len(positions),
        "baseline_gmac_per_frame": gmac(lambda: list(iter_official_structure(nets, image, plan, device)))
        / plan.frame_count,
    }
    out["ratio"] = out["baseline_gmac_per_frame"] / out["ours_gmac_per_frame"]
    checkpoints.clear_cache()
    return out


def bench_precision(ckpt, args, device, dtype) -> dict:
    """Ours in float32 vs ours in ``--dtype`` (the per-frame convolutions' precision), alternated in one run,
    256, batch 2."""
    if dtype == torch.float32:
        return {"skipped": "pass --dtype float16 or bfloat16"}
    image = source_image(256, device)
    plan = synthetic_plan(args.ratio_frames, 2)
    reduced = str(dtype).removeprefix("torch.")
    runs: dict[str, list[float]] = {"float32": [], reduced: []}
    for _ in range(args.repeats):
        for name, dt in (("float32", torch.float32), (reduced, dtype)):
            nets = load_renderer_nets(ckpt, 256, "crop", device, dt)
            warm_up(nets, image, device)
            t = run_ours(nets, image, plan, device)
            runs[name].append((t["prepare"] + t["frames"]) / plan.frame_count)
            log(f"precision: {name} {runs[name][-1]:.2f} s/frame, load {load_average()}")
    checkpoints.clear_cache()
    return {
        "s_per_frame": runs,
        "speedup": [f / h for f, h in zip(runs["float32"], runs[reduced], strict=True)],
        "load_avg": load_average(),
    }


def bench_arrangements(ckpt, args, device, dtype) -> list[dict]:
    """Per size and batch size, alternated: ours with the phase form on / off (:func:`set_phase_form`),
    on a CPU also without Winograd (:func:`set_winograd`), on CUDA also with a channels-last decoder, and
    the official per-step structure; seconds per frame."""
    from sadtalker_ext.nets.blocks import set_phase_form, set_winograd

    rows = []
    for size in args.sizes:
        nets = load_renderer_nets(ckpt, size, "crop", device, dtype)
        default = nets.generator.decoder.phase_form
        default_winograd = nets.generator.decoder.winograd
        image = source_image(size, device)
        # name: (phase form, channels-last decoder, Winograd)
        variants = {
            "ours, phase form": (True, False, default_winograd),
            "ours, direct form": (False, False, default_winograd),
        }
        if device.type == "cpu":
            variants["ours, phase form, no Winograd"] = (True, False, False)
        if device.type == "cuda":
            variants["ours, direct form, channels-last decoder"] = (False, True, False)
        for bs in args.batch_sizes:
            plan = synthetic_plan(whole_batches(args.ratio_frames, bs), bs)
            times: dict[str, list[float]] = {name: [] for name in [*variants, "official structure"]}
            for _ in range(args.repeats):
                for name in times:
                    phase, channels_last, wino = variants.get(name, (default, False, default_winograd))
                    set_phase_form(nets.generator, phase)
                    if wino != nets.generator.decoder.winograd:
                        set_winograd(nets.generator, wino)  # kernels built again by the CPU warm-up
                    fmt = torch.channels_last if channels_last else torch.contiguous_format
                    nets.generator.decoder.to(memory_format=fmt)
                    if name in variants:
                        warm_up(nets, image, device)
                        t = run_ours(nets, image, plan, device)
                        times[name].append((t["prepare"] + t["frames"]) / plan.frame_count)
                    else:
                        warm_up(nets, image, device, baseline=True)
                        t = run_baseline(nets, image, plan, device)
                        times[name].append(t["frames"] / plan.frame_count)
            row = {"size": size, "batch_size": bs, "frames": plan.frame_count, "s_per_frame": times}
            row["median_s_per_frame"] = {k: statistics.median(v) for k, v in times.items()}
            rows.append(row)
            log(
                f"arrangements {size} bs{bs}: "
                + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in row["median_s_per_frame"].items())
            )
        nets.generator.decoder.to(memory_format=torch.contiguous_format)
        set_phase_form(nets.generator, default)
        set_winograd(nets.generator, default_winograd)
        checkpoints.clear_cache()
    return rows


def decoder_conv_shapes(cfg, size: int) -> list[tuple[str, int, int, int, int]]:
    """The SPADE decoder's 3x3 convs for ``size`` pictures as ours runs them:
    ``(name, in channels, out channels, map side, calls per frame)``."""
    ic, wide, hid, oc, n = cfg.input_nc, 2 * cfg.input_nc, cfg.hidden_nc, cfg.output_nc, cfg.num_middle_blocks
    f = size // 4
    return [
        ("fc", ic, wide, f, 1),
        ("middle label convs (stacked)", ic, 2 * n * hid, f, 1),
        ("middle conv_0 / conv_1", wide, wide, f, 2 * n),
        ("middle gamma+beta", hid, 2 * wide, f, 2 * n),
        ("up_0 conv_0", wide, ic, 2 * f, 1),
        ("up_0 conv_1", ic, ic, 2 * f, 1),
        ("up_0 norm_0 gamma+beta", hid, 2 * wide, 2 * f, 1),
        ("up_0 norm_1 gamma+beta", hid, 2 * ic, 2 * f, 1),
        ("up_0 shortcut gamma + folded beta", hid, wide + ic, 2 * f, 1),
        ("up_1 conv_0", ic, oc, 4 * f, 1),
        ("up_1 conv_1", oc, oc, 4 * f, 1),
        ("up_1 norm_0 gamma+beta", hid, 2 * ic, 4 * f, 1),
        ("up_1 norm_1 gamma+beta", hid, 2 * oc, 4 * f, 1),
        ("up_1 shortcut gamma + folded beta", hid, ic + oc, 4 * f, 1),
    ]


def bench_conv(args) -> list[dict]:
    """Each of the decoder's 3x3 convs at batch 2 (CPU float32, random data): oneDNN's direct convolution
    vs :func:`sadtalker_ext.nets.winograd.conv3x3`, alternated ``--repeats`` times; the rounding of both
    against float64; whether :func:`~sadtalker_ext.nets.winograd.worthwhile` picks Winograd."""
    import torch.nn.functional as F

    from sadtalker_ext.nets import winograd
    from sadtalker_ext.nets.spade_decoder import SpadeDecoderConfig

    rows = []
    gen = torch.Generator().manual_seed(0)
    for size in args.sizes:
        for name, ci, co, side, calls in decoder_conv_shapes(SpadeDecoderConfig(), size):
            x = torch.randn(2, ci, side, side, generator=gen)
            w = torch.randn(co, ci, 3, 3, generator=gen) / (9 * ci) ** 0.5
            b = torch.randn(co, generator=gen)
            kernel = winograd.transform_kernel(w)
            times: dict[str, list[float]] = {"direct": [], "winograd": []}
            with torch.inference_mode():
                exact = F.conv2d(x.double(), w.double(), b.double(), padding=1)
                scale = float(exact.abs().max())
                direct = F.conv2d(x, w, b, padding=1)
                fast = winograd.conv3x3(x, kernel, b)
                for _ in range(args.repeats):
                    for key in times:
                        t0 = time.perf_counter()
                        if key == "direct":
                            F.conv2d(x, w, b, padding=1)
                        else:
                            winograd.conv3x3(x, kernel, b)
                        times[key].append(time.perf_counter() - t0)
            row = {
                "size": size,
                "conv": name,
                "in": ci,
                "out": co,
                "side": side,
                "calls_per_frame": calls,
                "direct_s": min(times["direct"]),
                "winograd_s": min(times["winograd"]),
                "direct_rel_err": float((direct.double() - exact).abs().max()) / scale,
                "winograd_rel_err": float((fast.double() - exact).abs().max()) / scale,
                "used": winograd.worthwhile(ci, co),
            }
            row["speedup"] = row["direct_s"] / row["winograd_s"]
            rows.append(row)
            log(f"conv {size} {name}: {row['speedup']:.2f}x ({'used' if row['used'] else 'not used'})")
    return rows


def bench_decoder(ckpt, args, device, dtype) -> dict:
    """SPADE decoder alone at 256: direct arrangement vs ours, alternated."""
    nets = load_renderer_nets(ckpt, 256, "crop", device, dtype)
    dec = nets.generator.decoder
    x = torch.randn(1, dec.cfg.input_nc, 64, 64, device=device) * 5
    direct, fused = [], []
    warm_up(nets, source_image(256, device), device)
    with torch.inference_mode():
        for _ in range(args.repeats):
            t: dict[str, float] = {}
            with timed(t, "direct", device):
                a = dec.forward_reference(x)
            with timed(t, "fused", device):
                b = dec(x)
            direct.append((t["direct"], t["direct_cpu"]))
            fused.append((t["fused"], t["fused_cpu"]))
        rel = float((a - b).abs().max() / a.abs().max())
    checkpoints.clear_cache()
    return {"direct_s": direct, "fused_s": fused, "max_rel_diff": rel, "load_avg": load_average()}


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    """(16, 16, 3) float32 block means of a picture: tells pictures apart, not resize rounding."""
    h, w = rgb.shape[:2]
    rows, cols = np.linspace(0, h, 17).astype(int), np.linspace(0, w, 17).astype(int)
    return np.array(
        [
            [rgb[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].mean(axis=(0, 1)) for j in range(16)]
            for i in range(16)
        ],
        np.float32,
    )


@contextlib.contextmanager
def recorded_landmarks(path: Path | None):
    """``--landmarks FILE``: the pipeline's 68-point landmarks come from FILE, so a machine without the
    detector (a GPU box without dlib's model) runs the same stages on the same crops. An entry is used for a
    picture of its shape whose 16x16 block means are within 1 level of the recorded ones; other pictures go
    to the real detector, and its answers are added to FILE."""
    if path is None:
        yield
        return
    from sadtalker_ext import face

    real = face.landmarks68
    saved = dict(np.load(path)) if path.is_file() else {}
    entries = [
        (tuple(saved[f"shape_{i}"]), saved[f"thumb_{i}"], saved[f"lm_{i}"])
        for i in range(sum(1 for k in saved if k.startswith("shape_")))
    ]
    recorded = len(entries)

    def landmarks68(rgb: np.ndarray, *args, **kwargs) -> np.ndarray | None:
        thumb = _thumbnail(rgb)
        for shape, known, lm in entries:
            if shape == rgb.shape and float(np.abs(known - thumb).max()) <= 1.0:
                return lm if lm.size else None
        found = real(rgb, *args, **kwargs)
        entries.append(
            (rgb.shape, thumb, np.zeros((0, 2), np.float32) if found is None else np.asarray(found))
        )
        return found

    face.landmarks68 = landmarks68
    try:
        yield
    finally:
        face.landmarks68 = real
        if len(entries) > recorded:
            arrays = {}
            for i, (shape, thumb, lm) in enumerate(entries):
                arrays.update({f"shape_{i}": np.asarray(shape), f"thumb_{i}": thumb, f"lm_{i}": lm})
            np.savez(path, **arrays)


def standin_gfpgan(folder: Path) -> Path:
    """``GFPGANv1.4.pth`` of the official architecture with seeded random weights (timing only)."""
    from sadtalker_ext.enhance import GFPGAN_FILE
    from sadtalker_ext.nets.gfpgan import GFPGANConfig, GFPGANv1Clean

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / GFPGAN_FILE).is_file():
        torch.manual_seed(0)
        torch.save({"params_ema": GFPGANv1Clean(GFPGANConfig()).state_dict()}, str(folder / GFPGAN_FILE))
    return folder


def bench_stages(ckpt: Path, args, device, dtype, work: Path) -> dict:
    """Two generations through ``SadTalker.generate`` (the second reuses the loaded models)."""
    from sadtalker_ext.options import GenerationOptions
    from sadtalker_ext.pipeline import SadTalker

    face_dir = standin_gfpgan(work / "gfpgan") if args.stage_enhancer == "gfpgan" else work / "no_gfpgan"
    results = []
    with recorded_landmarks(args.landmarks):
        talker = SadTalker(
            checkpoint_dir=ckpt, gfpgan_dir=face_dir, device=device, dtype=dtype, result_dir=work
        )
        for i in range(2):
            opts = GenerationOptions(
                source=str(MEDIA / "full3.png"),
                driven_audio=str(wav_of(args.stage_seconds, work)),
                preprocess=args.stage_preprocess,
                size=args.stage_size,
                batch_size=args.stage_batch,
                enhancer=args.stage_enhancer,
                seed=0,
                face_detector="dlib",
                output=str(work / f"stages_{i}.mp4"),
            )
            res = talker.generate(opts)
            results.append({"frames": res.num_frames, "timings": res.timings, "load_avg": load_average()})
            log(f"stages run {i}: {res.num_frames} frames, {res.timings}")
        talker.unload()
    return {
        "seconds_of_audio": args.stage_seconds,
        "renderer": args.stage_renderer,
        "preprocess": args.stage_preprocess,
        "size": args.stage_size,
        "batch_size": args.stage_batch,
        "enhancer": args.stage_enhancer,
        "runs": results,
    }


def bench_resample(args) -> list[dict]:
    """The official kaiser_best resampler and soxr HQ to 16 kHz, per input rate (CPU, one thread pool)."""
    from sadtalker_ext.audio.decode import resample_to_16k
    from sadtalker_ext.audio.resample import kaiser_best_table

    kaiser_best_table()  # built once per process; not part of the per-call time
    rows = []
    for rate in args.resample_rates:
        x = (np.random.default_rng(0).standard_normal(int(rate * args.resample_seconds)) * 0.1).astype(
            np.float32
        )
        row = {"rate": rate, "seconds": args.resample_seconds, "load_avg": load_average()}
        for name in ("kaiser_best", "soxr"):
            resample_to_16k(x[: rate // 10], rate, name)  # phase tables / library warm-up
            t0 = time.perf_counter()
            resample_to_16k(x, rate, name)
            row[f"{name}_s"] = time.perf_counter() - t0
        log(f"resample {rate} Hz: {row}")
        rows.append(row)
    return rows


def _stub_renderer_networks() -> None:
    """Replace the generator call by the source picture (mapping nets and keypoints still run per frame),
    so hours of CPU rendering are not needed to see how memory grows with the number of frames."""
    from sadtalker_ext.render import animate

    def render_frames(self, source, plan, positions):
        drive, _ = self.driving_motion(source, plan, positions)
        n = len(positions)
        return {
            "prediction": source.image.expand(n, *source.image.shape[1:]).clone(),
            "kp_driving": drive.value,
        }

    animate.Renderer.render_frames = render_frames


def memory_child(args) -> None:
    """One generation (crop, reduced renderer) of ``--_memory_child`` seconds; prints a JSON line."""
    from sadtalker_ext.options import GenerationOptions
    from sadtalker_ext.pipeline import SadTalker

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    work = Path(args._work)
    if args._stub_render:
        _stub_renderer_networks()
    with recorded_landmarks(args.landmarks):
        talker = SadTalker(
            checkpoint_dir=args._ckpt,
            gfpgan_dir=work / "no_gfpgan",
            device=device,
            dtype=dtype,
            result_dir=work,
        )
        rss_before = peak_rss_mb()
        opts = GenerationOptions(
            source=str(MEDIA / "people_0.png"),
            driven_audio=str(wav_of(args._memory_child, work)),
            preprocess="crop",
            size=256,
            batch_size=args._memory_batch,
            seed=0,
            face_detector="dlib",
            output=str(work / f"memory_{args._memory_child:g}s.mp4"),
        )
        res = talker.generate(opts)
    out = {
        "seconds": args._memory_child,
        "frames": res.num_frames,
        "timings": res.timings,
        "peak_rss_before_generate_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }
    if device.type == "cuda":
        out["peak_vram_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print("MEMORY_RESULT " + json.dumps(out), flush=True)


def bench_memory(reduced: Path, args, work: Path) -> list[dict]:
    rows = []
    for seconds in args.memory_seconds:
        wav_of(seconds, work)
        cmd = [
            sys.executable,
            "-m",
            "bench.bench",
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--_memory_child",
            str(seconds),
            "--_memory_batch",
            str(args.memory_batch),
            "--_ckpt",
            str(reduced),
            "--_work",
            str(work),
        ]
        if args.memory_render == "stub":
            cmd.append("--_stub_render")
        if args.landmarks is not None:
            cmd += ["--landmarks", str(args.landmarks)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=str(REPO))
        stdout, _ = proc.communicate()
        wall = time.perf_counter() - t0
        line = [ln for ln in stdout.decode().splitlines() if ln.startswith("MEMORY_RESULT ")]
        if proc.returncode != 0 or not line:
            rows.append({"seconds": seconds, "error": f"child exited {proc.returncode}"})
            continue
        row = json.loads(line[-1][len("MEMORY_RESULT ") :])
        row["wall_s"] = wall
        row["renderer"] = "stub (generator skipped)" if args.memory_render == "stub" else "reduced-width"
        row["load_avg"] = load_average()
        rows.append(row)
        log(f"memory {seconds:g} s: {row['frames']} frames, peak RSS {row['peak_rss_mb']:.0f} MiB")
    return rows


# ------------------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# sadtalker_ext benchmark",
        "",
        f"{env['date']} · {env['device']} {env.get('cuda_device') or ''} {env['dtype']} · torch {env['torch']} · "
        f"{env['cpu_count']} CPUs · "
        f"torch threads {env['threads']} · load average at start {env['load_avg_start']}, "
        f"at end {report.get('load_avg_end')}",
        f"Weights: {env['weights']}.",
        f"Machine: {machine_line(env['machine'])}." if env.get("machine") else "",
        "",
    ]
    if env.get("cuda_device"):
        lines += [
            f"CUDA float32 settings: cuDNN TF32 {env['cudnn_allow_tf32']}, matmul TF32 "
            f"{env['matmul_allow_tf32']}, cuDNN benchmark {env['cudnn_benchmark']} (PyTorch defaults unless "
            "the host changes them).",
            "",
        ]
    if report.get("load"):
        lines += [
            "## Model load (renderer networks)",
            "",
            "| size | cold (s) | warm (ms) | decoder call 1 (s) | decoder call 2 (s) | Winograd kernels (MiB) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['size']} | {r['cold_s']:.2f} | {r['warm_s'] * 1e3:.3f} | {r.get('first_decoder_call_s', 0):.2f} | "
            f"{r.get('second_decoder_call_s', 0):.2f} | {r.get('winograd_kernels_mb', 0):.0f} |"
            for r in report["load"]
        ]
        lines += [
            "",
            "cold: first load_renderer_nets in the process (OS file cache may be warm); "
            "warm: second call (process cache, no file read). Decoder calls on a zero feature of batch 1: "
            "the first one builds the Winograd kernels (CPU float32; once per process, kept with the models).",
            "",
        ]
    if report.get("macs"):
        m = report["macs"]
        lines += [
            "## Multiply-adds per 256 frame (convolutions + matrix products, flop counter)",
            "",
            f"ours {m['ours_gmac_per_frame']:.1f} GMAC per frame (+ {m['ours_prepare_gmac']:.1f} GMAC once per "
            f"generation), official per-step structure at batch 2 {m['baseline_gmac_per_frame']:.1f} GMAC per frame: "
            f"{m['ratio']:.2f}x. With Winograd (CPU float32) the counter sees its products (36 per 4x4 output "
            "tile and channel pair), not the additions of its transforms: a count of products, not of time.",
            "",
        ]
    if report.get("precision") and "speedup" in report["precision"]:
        pr = report["precision"]
        cells = ", ".join(
            f"{k} {' / '.join(f'{v:.2f}' for v in vals)}" for k, vals in pr["s_per_frame"].items()
        )
        lines += [
            "## Renderer precision (ours, 256, batch 2, alternated; s/frame incl. prepare_source)",
            "",
            f"{cells}; speed-up {' / '.join(f'{v:.2f}x' for v in pr['speedup'])}; load average {pr['load_avg']}.",
            "",
        ]
    if report.get("ratio"):
        lines += ratio_markdown(report["ratio"])
    if report.get("arrangements"):
        rows = report["arrangements"]
        names = list(rows[0]["median_s_per_frame"])
        lines += [
            "## Arrangements (ms per frame, median of the alternated repeats; ours includes prepare_source)",
            "",
            "| size | batch | frames | " + " | ".join(names) + " | best ours vs official |",
            "|---" * (len(names) + 4) + "|",
        ]
        for r in rows:
            med = r["median_s_per_frame"]
            best = min(v for k, v in med.items() if k.startswith("ours"))
            cells = " | ".join(f"{med[k] * 1e3:.2f}" for k in names)
            lines.append(
                f"| {r['size']} | {r['batch_size']} | {r['frames']} | {cells} | "
                f"{med['official structure'] / best:.2f}x |"
            )
        lines.append("")
    if report.get("conv"):
        lines += [
            "## The decoder's 3x3 convolutions: direct (oneDNN) vs Winograd F(4x4, 3x3), batch 2, float32",
            "",
            "Best of the alternated repeats, seconds per call; rounding = max |error| against float64 / max |output|.",
            "",
            "| size | conv | in -> out | map | calls/frame | direct (s) | Winograd (s) | speed-up | rounding direct | "
            "rounding Winograd | used |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["conv"]:
            lines.append(
                f"| {r['size']} | {r['conv']} | {r['in']} -> {r['out']} | {r['side']}x{r['side']} | "
                f"{r['calls_per_frame']} | {r['direct_s']:.3f} | {r['winograd_s']:.3f} | {r['speedup']:.2f}x | "
                f"{r['direct_rel_err']:.1e} | {r['winograd_rel_err']:.1e} | {'yes' if r['used'] else 'no'} |"
            )
        for size in sorted({r["size"] for r in report["conv"]}):
            rows = [r for r in report["conv"] if r["size"] == size]
            before = sum(r["direct_s"] * r["calls_per_frame"] for r in rows) / 2
            after = (
                sum(r[("winograd_s" if r["used"] else "direct_s")] * r["calls_per_frame"] for r in rows) / 2
            )
            lines.append(
                f"\nSize {size}: these convolutions take {before:.2f} s per frame direct, {after:.2f} s with "
                f"Winograd where used ({before / after:.2f}x)."
            )
        lines.append("")
    if report.get("decoder"):
        d = report["decoder"]
        lines += [
            "## SPADE decoder alone (256)",
            "",
            "wall / CPU seconds per call, alternated: direct arrangement "
            f"{', '.join(f'{w:.2f}/{c:.2f}' for w, c in d['direct_s'])}; ours "
            f"{', '.join(f'{w:.2f}/{c:.2f}' for w, c in d['fused_s'])}; "
            f"max relative difference {d['max_rel_diff']:.1e}.",
            "",
        ]
    if report.get("render"):
        lines += [
            "## Renderer throughput",
            "",
            "Official widths. Extrapolated from the frames rendered per configuration (column `frames`). "
            "Peak RSS is the process peak so far (configurations run in order, models loaded), an upper bound.",
            "",
            "| size | batch | frames | prepare_source (s) | s/frame | frames/s | peak RSS (MiB) | peak VRAM (MiB) | load avg |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["render"]:
            lines.append(
                f"| {r['size']} | {r['batch_size']} | {r['frames_rendered']} | "
                f"{r['prepare_s']:.2f} | {r['s_per_frame']:.3f} | {r['frames_per_s']:.3f} | "
                f"{r.get('peak_rss_mb', float('nan')):.0f} | {r.get('peak_vram_mb', float('nan')):.0f} | {r['load_avg'][0] if r['load_avg'] else ''} |"
            )
        lines.append("")
    if report.get("stages"):
        s = report["stages"]
        official = s.get("renderer") == "official"
        lines += [
            f"## Stages through the pipeline ({s['seconds_of_audio']:g} s of audio, preprocess "
            f"{s.get('preprocess', 'full')}, size {s.get('size', 256)}, batch {s.get('batch_size', 2)}, "
            f"enhancer {s.get('enhancer', 'none')}, {'official' if official else 'REDUCED'}-width renderer)",
            "",
            "Seconds per stage as `SadTalker.generate` reports them (`inputs` = picture + audio decode + "
            "audio features; `models` = load; `motion` = coefficients; `render` = renderer"
            + ("" if official else " at REDUCED widths, see the throughput table for the official widths")
            + "; `resize+paste` = the main thread's wait for resizing and paste-back, which run in a thread "
            "pool; `encode` + `mux` = video encoding). Run 2 reuses the loaded "
            "models. Real-time factor = total / seconds of audio (below 1: faster than real time).",
            "",
        ]
        keys = sorted({k for run in s["runs"] for k in run["timings"]})
        lines += [
            "| run | frames | " + " | ".join(keys) + " | real-time factor |",
            "|---" * (len(keys) + 3) + "|",
        ]
        for i, run in enumerate(s["runs"]):
            vals = " | ".join(f"{run['timings'].get(k, 0.0):.2f}" for k in keys)
            rtf = run["timings"].get("total", float("nan")) / s["seconds_of_audio"]
            lines.append(f"| {i + 1} | {run['frames']} | {vals} | {rtf:.3f} |")
        lines.append("")
    if report.get("resample"):
        lines += [
            "## Audio resampling to 16 kHz (official kaiser_best in numpy vs soxr HQ)",
            "",
            "Seconds for the measured length; per hour EXTRAPOLATED linearly from it.",
            "",
            "| input rate | audio (s) | kaiser_best (s) | kaiser_best per hour (s) | soxr (s) | load avg |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["resample"]:
            per_hour = r["kaiser_best_s"] * 3600.0 / r["seconds"]
            lines.append(
                f"| {r['rate']} | {r['seconds']:g} | {r['kaiser_best_s']:.3f} | {per_hour:.1f} | "
                f"{r['soxr_s']:.3f} | {r['load_avg'][0] if r['load_avg'] else ''} |"
            )
        lines.append("")
    if report.get("cluster"):
        lines += cluster_markdown(report["cluster"])
    if report.get("memory"):
        lines += [
            "## Memory against audio length (pipeline, preprocess crop, REDUCED-width renderer)",
            "",
            "Peak RSS of a child process making one whole video (all stages, frames streamed to the encoder).",
            "",
            "| audio (s) | frames | renderer | peak RSS (MiB) | vs shortest | peak VRAM (MiB) | wall (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        ok = [r for r in report["memory"] if "error" not in r]
        base = ok[0]["peak_rss_mb"] if ok else None
        for r in report["memory"]:
            if "error" in r:
                lines.append(f"| {r['seconds']:g} | error: {r['error']} | | | | | |")
                continue
            lines.append(
                f"| {r['seconds']:g} | {r['frames']} | {r.get('renderer', '')} | {r['peak_rss_mb']:.0f} | "
                f"{r['peak_rss_mb'] / base:.3f}x | "
                f"{r.get('peak_vram_mb', float('nan')):.0f} | {r['wall_s']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--checkpoint_dir", type=Path, help="official weight folder (default: stand-ins)")
    p.add_argument(
        "--standin_dir", type=Path, help="where to build/reuse stand-in files (default: a temp dir)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument(
        "--frames", type=int, default=8, help="frames rendered per configuration (official widths)"
    )
    p.add_argument("--ratio_frames", type=int, default=8, help="frames per ours/baseline repeat")
    p.add_argument("--ratio_size", type=int, default=256, choices=(256, 512), help="ratio: renderer size")
    p.add_argument(
        "--ratio_no_bf16", action="store_true", help="ratio: no bfloat16 side even where the CPU has it"
    )
    p.add_argument("--repeats", type=int, default=3, help="alternated ours/baseline repeats")
    p.add_argument(
        "--official",
        type=Path,
        help=f"ratio: root of an official SadTalker checkout (also ${OFFICIAL_ENV}); its make_animation is "
        "timed against ours in a separate process. Without it the baseline is our structure copy",
    )
    p.add_argument("--threads", type=int, default=2, help="ratio: torch threads of each worker process")
    p.add_argument("--stage_seconds", type=float, default=2.0, help="audio length of the stage run")
    p.add_argument(
        "--stage_renderer",
        choices=("reduced", "official"),
        default="reduced",
        help="stage run: reduced-width renderer (CPU) or official widths (a GPU: real time factor)",
    )
    p.add_argument("--stage_preprocess", default="full", help="stage run: preprocess mode")
    p.add_argument("--stage_size", type=int, default=256, choices=(256, 512))
    p.add_argument("--stage_batch", type=int, default=2, help="stage run: renderer batch size")
    p.add_argument("--stage_enhancer", choices=("none", "gfpgan"), default="none")
    p.add_argument(
        "--landmarks",
        type=Path,
        help="stage and memory runs: face landmarks from this .npz (pictures it lacks: detected, added)",
    )
    p.add_argument("--memory_seconds", type=float, nargs="+", default=[10, 30, 120])
    p.add_argument("--memory_batch", type=int, default=2)
    p.add_argument(
        "--memory_render",
        choices=("real", "stub"),
        default="real",
        help="memory runs: real reduced-width renderer, or 'stub' (generator call replaced by the source "
        "picture; every other stage real) for long audio on a slow CPU",
    )
    p.add_argument(
        "--sections",
        nargs="+",
        default=["load", "macs", "ratio", "decoder", "render", "stages", "memory", "resample"],
        choices=[
            "load",
            "macs",
            "ratio",
            "precision",
            "arrangements",
            "conv",
            "decoder",
            "render",
            "stages",
            "memory",
            "resample",
            "cluster",
        ],
    )
    p.add_argument("--cluster_jobs", type=int, default=6, help="cluster: videos per side (bench/cluster.py)")
    p.add_argument("--cluster_seconds", type=float, default=0.2, help="cluster: audio seconds per video")
    p.add_argument("--resample_seconds", type=float, default=60.0, help="resample: audio length per rate")
    p.add_argument(
        "--resample_rates", type=int, nargs="+", default=[48000, 44100, 22050], help="resample: input rates"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CPU-friendly: one call per config (512: batch 1 only), 4 ratio frames, 2 repeats",
    )
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--_memory_child", type=float, help=argparse.SUPPRESS)
    p.add_argument("--_memory_batch", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--_ckpt", help=argparse.SUPPRESS)
    p.add_argument("--_stub_render", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.ratio_frames, args.repeats = 1, 4, 2
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._memory_child is not None:
        memory_child(args)
        return 0
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    tmp = tempfile.TemporaryDirectory(prefix="sadtalker_bench_")
    work = Path(tmp.name)
    (work / "no_gfpgan").mkdir()
    ckpt, weights = weights_folder(args.checkpoint_dir, args.standin_dir or work / "standin")
    reduced = build_reduced(ckpt, (args.standin_dir or work) / "reduced")
    report: dict = {
        "environment": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "device": str(device),
            "dtype": args.dtype,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "load_avg_start": load_average(),
            "machine": machine_info(),
            "weights": weights,
            "quick": args.quick,
        }
    }

    def save() -> str:  # after every section, so a long run that is stopped keeps what it measured
        report["load_avg_end"] = load_average()
        text = markdown(report)
        save_report(args.out, "bench", report, text)
        return text

    runners = {
        "load": lambda: bench_load(ckpt, args.sizes, device, dtype),
        "macs": lambda: bench_macs(ckpt, args, device, dtype),
        "ratio": lambda: bench_ratio(ckpt, args, device, dtype),
        "precision": lambda: bench_precision(ckpt, args, device, dtype),
        "arrangements": lambda: bench_arrangements(ckpt, args, device, dtype),
        "decoder": lambda: bench_decoder(ckpt, args, device, dtype),
        "conv": lambda: bench_conv(args),
        "render": lambda: bench_render(ckpt, args, device, dtype),
        "stages": lambda: bench_stages(
            ckpt if args.stage_renderer == "official" else reduced, args, device, dtype, work
        ),
        "memory": lambda: bench_memory(reduced, args, work),
        "resample": lambda: bench_resample(args),
        "cluster": lambda: bench_cluster(
            args.cluster_jobs, args.cluster_seconds, args.device, work / "cluster"
        ),
    }
    for name in args.sections:
        report[name] = runners[name]()
        save()
    print(save())
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
