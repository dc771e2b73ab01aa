"""Shared fixtures: parity vectors and stand-in checkpoint folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests import standin

# Share of uint8 values of an e2e run's rendered frames that must equal the official ones. The parity
# README suggests 97 %; but the official float32 frames are themselves rounded by the producing CPU's
# kernels: our renderer run in float64 (the exact value) matches only 96.9 % of e2e_full's step-0 values
# (on an AVX-512 CPU, float32 gives 96.8 %; on an AVX2 CPU, whose kernels round like the official run's,
# float32 passed 97 %). Every value must still be within 2 levels.
E2E_MIN_IDENTICAL = 0.96


def parity_device() -> torch.device:
    """Device of the parity tests: ``$SADTALKER_TEST_DEVICE`` (``cuda`` on a GPU machine), default ``cpu``.

    Asking for a device this machine lacks is an error, not a skip: whoever set the variable wants
    those tests to run there.
    """
    device = torch.device(os.environ.get("SADTALKER_TEST_DEVICE") or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("SADTALKER_TEST_DEVICE asks for cuda, but torch sees no CUDA device")
    return device


@pytest.fixture(scope="session", autouse=True)
def _full_float32_on_cuda():
    """Parity on a GPU checks float32 math: TF32 (on by default for cuDNN convolutions on Ampere and
    later) rounds inputs to 10 mantissa bits, far beyond the vectors' tolerances. Restored afterwards."""
    if parity_device().type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def vector_files(pattern: str) -> list[Path]:
    """Vector files matching ``pattern`` in the parity directory; a missing directory is an error."""
    d = standin.parity_dir()
    if not d.is_dir():
        raise FileNotFoundError(f"parity vector directory not found: {d} (set SADTALKER_PARITY_DIR)")
    return sorted(d.glob(pattern))


def vector_params(*patterns: str):
    """``pytest.param`` per vector file matching any pattern.

    No matching file: a collection error in CI (the vectors must be there), a visible skip elsewhere.
    """
    files = sorted({f for pattern in patterns for f in vector_files(pattern)})
    if not files:
        wanted = " or ".join(patterns)
        if os.environ.get("CI"):
            raise FileNotFoundError(
                f"no {wanted} vectors in {standin.parity_dir()} (set SADTALKER_PARITY_DIR)"
            )
        return [pytest.param(None, id="no-vectors", marks=pytest.mark.skip(reason=f"no {wanted} vectors"))]
    return [pytest.param(f, id=f.stem) for f in files]


def seed_of(npz, path: Path) -> int:
    """The fill.py seed of a vector file: its ``seed`` array, else the ``_seedN`` in its name."""
    if "seed" in npz.files:
        return int(np.asarray(npz["seed"]).reshape(-1)[0])
    stem = path.stem
    return int(stem.rsplit("seed", 1)[1].split("_")[0])


class StandinFactory:
    """Builds (once per session) stand-in checkpoint folders keyed by seed and overrides."""

    def __init__(self, root: Path):
        self.root = root

    def folder(self, seed: int, overrides=None, names=standin.FILES) -> Path:
        tag = f"seed{seed}"
        if overrides:
            tag += "_" + standin.overrides_digest(overrides)
        out = self.root / tag
        standin.build_checkpoints(out, seed, overrides, names)
        return out

    def for_vector(self, path: Path, names=standin.FILES) -> Path:
        with np.load(path, allow_pickle=False) as npz:
            return self.folder(seed_of(npz, path), standin.overrides_of(npz), names)


def e2e_standin_folder(root: Path) -> np.ndarray:
    """Fill ``root`` for a real CLI run on the first e2e_crop vector: ``ck/`` (reduced-width stand-in
    checkpoints with the vector's seed and overrides), an empty face-model folder ``gf/`` and the vector's
    picture as ``face.png``. Returns its fed audio, float32 (16 kHz). Skips without an e2e_crop vector."""
    files = vector_files("e2e_crop_seed*.npz")
    if not files:
        pytest.skip("no e2e_crop vector file")
    with np.load(files[0], allow_pickle=False) as npz:
        seed, overrides = seed_of(npz, files[0]), standin.overrides_of(npz)
        picture, wav = npz["input_image_rgb"], np.asarray(npz["wav_fed"], np.float32)
    standin.write_reduced_checkpoints(root / "ck", seed=seed, motion=standin.motion_tensors(seed, overrides))
    (root / "gf").mkdir()
    Image.fromarray(picture).save(root / "face.png")
    return wav


@pytest.fixture(scope="session")
def standins(tmp_path_factory) -> StandinFactory:
    return StandinFactory(tmp_path_factory.mktemp("standin"))


def _pcm_subtype(samples: np.ndarray) -> str:
    """The WAV subtype that stores ``samples`` (as ``soundfile.read(dtype=...)`` returned them) exactly."""
    kind = np.asarray(samples).dtype
    if kind == np.int16:
        return "PCM_16"
    if kind == np.int32:
        # PCM_24 reads back as value x 256 in int32; PCM_32 holds the same integers and reads back equal.
        return "PCM_32"
    if kind == np.float64:
        return "DOUBLE"
    return "FLOAT"


def write_fed_audio(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write an e2e vector's ``wav_fed`` with its own rate and a subtype that keeps its values exactly."""
    import soundfile as sf

    sf.write(str(path), np.asarray(samples), int(sample_rate), subtype=_pcm_subtype(samples))
    return path


def stored_fed_audio(vector_path: Path, samples: np.ndarray, sample_rate: int) -> Path | None:
    """The ``e2e_audio_*.wav`` beside an e2e vector whose rate and samples are ``wav_fed_sr``/``wav_fed``."""
    import soundfile as sf

    samples = np.asarray(samples)
    for wav in sorted(vector_path.parent.glob("e2e_audio_*.wav")):
        info = sf.info(str(wav))
        if info.samplerate != int(sample_rate) or info.frames != samples.shape[0]:
            continue
        data, _ = sf.read(str(wav), dtype=samples.dtype.name)
        if np.array_equal(data, samples):
            return wav
    return None


def fed_audio_file(vector_path: Path, samples: np.ndarray, sample_rate: int, tmp_dir: Path) -> Path:
    """The audio file the official e2e run was fed: the stored one, else ``wav_fed`` written faithfully."""
    stored = stored_fed_audio(vector_path, samples, sample_rate)
    if stored is not None:
        return stored
    return write_fed_audio(tmp_dir / "fed_audio.wav", samples, sample_rate)
