"""Parity of the audio-to-coefficient stage with the official code (coeff_*.npz and e2e_*.npz vectors).

Each coeff file holds several cases distinguished by an array-name prefix ('' main, 'refvideo_', 'short_', ...);
a case exists for every ``<prefix>exp_pred``. A case with ``<prefix>coeff_3dmm_input`` used that reference video
as both eye-blink and pose reference (ref_mode 'pose+blink').
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from sadtalker_ext.motion import generate_coefficients, load_motion_nets, pose_noise_draws, save_coeff_mat
from sadtalker_ext.motion.coefficients import draw_pose_noise
from sadtalker_ext.render.motion import assemble_coefficients
from tests.conftest import parity_device, vector_params
from tests.numerics import assert_normal_draws_match

SAFETENSORS_256 = ("SadTalker_V0.0.2_256.safetensors",)


def close(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-4, atol: float = 1e-5) -> None:
    """|a - b| <= rel * max|b| + atol, elementwise (the .md tolerance)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    bound = rel * float(np.abs(expected).max()) + atol
    worst = float(np.abs(actual - expected).max())
    assert worst <= bound, f"max |diff| {worst:.3g} > {bound:.3g}"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def case_prefixes(data: dict[str, np.ndarray]) -> list[str]:
    return sorted(
        k[: -len("exp_pred")] for k in data if k.endswith("exp_pred") and f"{k[:-8]}indiv_mels" in data
    )


@pytest.fixture(scope="module")
def nets_for(standins):
    def get(path: Path):
        folder = standins.for_vector(path, names=SAFETENSORS_256)
        return load_motion_nets(folder, 256, parity_device(), torch.float32)

    return get


@pytest.mark.parametrize("path", vector_params("coeff_*.npz"))
def test_coefficients_match_official(path: Path, nets_for, tmp_path: Path) -> None:
    if path.suffix != ".npz":
        pytest.skip("not an npz")
    data = load_npz(path)
    prefixes = case_prefixes(data)
    if not prefixes:
        pytest.skip(f"{path.name} holds no coefficient case")
    nets = nets_for(path)
    first = data["first_frame_coeff_3dmm"]
    pose_style = int(data["pose_style"])
    for p in prefixes:
        ref_video = data.get(f"{p}coeff_3dmm_input")
        # the .md: the reference video served as eye-blink AND pose reference, unless a file says otherwise
        mode = str(data.get(f"{p}ref_info", "pose+blink")) if ref_video is not None else None
        t = int(data[f"{p}num_frames"]) if f"{p}num_frames" in data else data[f"{p}indiv_mels"].shape[0]
        z = data[f"{p}z"]
        assert z.shape[0] == pose_noise_draws(t), p
        res = generate_coefficients(
            nets,
            data[f"{p}indiv_mels"],
            data[f"{p}ratio"],
            first,
            pose_style,
            noise=z,
            ref_coeffs=ref_video,
            ref_mode=mode,
        )
        # Inputs as the official get_data built them.
        np.testing.assert_array_equal(res.ref_rows, data[f"{p}ref"], err_msg=p)
        np.testing.assert_array_equal(res.noise, z.astype(np.float32), err_msg=p)
        close(res.exp_pred, data[f"{p}exp_pred"])
        close(res.pose_motion, data[f"{p}pose_motion_pred"])
        close(res.pose_raw, data[f"{p}pose_pred_raw"])
        np.testing.assert_array_equal(res.pose_raw[0], first[0, 64:70], err_msg=p)
        close(res.mat_coeffs, data[f"{p}coeff_3dmm"])
        assert res.mat_coeffs.dtype == np.float32 and res.mat_coeffs.shape == (t, 70)
        out = save_coeff_mat(tmp_path / f"{p or 'main'}.mat", res.mat_coeffs)
        np.testing.assert_array_equal(loadmat(out)["coeff_3dmm"], res.mat_coeffs)


@pytest.mark.parametrize("path", vector_params("coeff_*.npz"))
def test_noise_generator_reproduces_recorded_draws(path: Path) -> None:
    """A CPU generator seeded like the official ``torch.manual_seed`` gives the recorded draws, in order."""
    if path.suffix != ".npz":
        pytest.skip("not an npz")
    data = load_npz(path)
    if "torch_seed" not in data:
        pytest.skip("no torch_seed recorded")
    seed = int(data["torch_seed"])
    for p in case_prefixes(data):
        t = data[f"{p}indiv_mels"].shape[0]
        drawn = draw_pose_noise(t, torch.Generator().manual_seed(seed)).numpy()
        recorded = data[f"{p}z"]
        assert_normal_draws_match(drawn, recorded, p)


@pytest.mark.parametrize("path", vector_params("e2e_*.npz"))
def test_e2e_still_mode_render_rows(path: Path, nets_for) -> None:
    """End-to-end run (still, blink off): ExpNet output and the rows the renderer sees, made the one way the
    pipeline makes them (the .mat motion through ``render.motion.assemble_coefficients``)."""
    data = load_npz(path)
    needed = ("indiv_mels", "ratio", "first_coeff_3dmm_73", "exp_pred", "render_coeff_sequence")
    if any(k not in data for k in needed):
        pytest.skip(f"{path.name} lacks coefficient arrays")
    nets = nets_for(path)
    still = bool(data["still_mode"]) if "still_mode" in data else True
    res = generate_coefficients(
        nets,
        data["indiv_mels"],
        data["ratio"],
        data["first_coeff_3dmm_73"],
        int(data["pose_style"]),
        noise=data.get("pose_z"),
        generator=torch.Generator().manual_seed(0),
    )
    np.testing.assert_allclose(res.exp_pred, data["exp_pred"], rtol=0, atol=1e-4)
    _, rows = assemble_coefficients(
        data["first_coeff_3dmm_73"],
        res.mat_coeffs,
        preprocess=str(data["preprocess"]) if "preprocess" in data else "crop",
        still=still,
        expression_scale=float(data["expression_scale"]) if "expression_scale" in data else 1.0,
    )
    np.testing.assert_allclose(rows, data["render_coeff_sequence"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(res.mat_coeffs[:, :64], data["coeff_mat_70"][:, :64], rtol=0, atol=1e-4)
    if "pose_z" in data and "pose_pred_raw" in data:
        # With the recorded noise the PoseVAE path is reproducible too.
        close(res.pose_raw, data["pose_pred_raw"])
        close(res.mat_coeffs, data["coeff_mat_70"])
