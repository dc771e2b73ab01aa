"""Parity of face preprocessing and paste-back with the official SadTalker code.

Data-driven over ``prep_*.npz`` (crop modes, alignment, reconstruction net, first-frame record),
``prep_paste_*.npz`` (resize + seamlessClone paste-back) and the crop / first-frame / paste fields of
``e2e_*.npz``. Landmarks are inputs read from the files; reconstruction weights are fill.py stand-ins
(with the file's overrides) written in the official format and loaded through ``load_recon_net``.
Tolerances follow the files' ``.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker_ext.preprocess.align import (
    align_picture,
    five_points,
    landmarks_for_alignment,
    load_standard_landmarks,
    network_input,
)
from sadtalker_ext.preprocess.crop import CropInfo, face_boxes, plan_crop
from sadtalker_ext.preprocess.extract import extract_source, load_recon_net
from sadtalker_ext.preprocess.mode import MODE_NAMES, PreprocessMode
from sadtalker_ext.preprocess.paste import PasteBack, aspect_resize
from tests import standin
from tests.conftest import vector_params

SAFETENSORS_256 = standin.FILES[0]


# ----------------------------------------------------------------------------------------------- helpers
def _prep_params(pattern: str, exclude: str | None = None) -> list:
    out = []
    for p in vector_params(pattern):
        path = p.values[0]
        if path is not None and exclude and exclude in path.name:
            continue
        out.append(p)
    return out


def _mode_params(pattern: str, exclude: str | None, key_suffix: str) -> list:
    """One param per (file, mode) for the modes whose ``<mode>_<key_suffix>`` the file holds."""
    out = []
    for p in _prep_params(pattern, exclude):
        path = p.values[0]
        if path is None:
            out.append(pytest.param(None, None, id=p.id, marks=p.marks))
            continue
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
        out.extend(
            pytest.param(path, mode, id=f"{path.stem}-{mode}")
            for mode in MODE_NAMES
            if f"{mode}_{key_suffix}" in names
        )
    return out


PREP_FILES = _prep_params("prep_*.npz", exclude="prep_paste")
PREP_MODES = _mode_params("prep_*.npz", "prep_paste", "recon_output_257")
PASTE_MODES = _mode_params("prep_paste_*.npz", None, "paste_out_bgr")
E2E_FILES = vector_params("e2e_*.npz")


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if not k.startswith("override")}


def _no_face(lm: np.ndarray) -> bool:
    return bool(np.mean(lm) == -1)


def assert_uint8_close(ours: np.ndarray, ref: np.ndarray, max_diff: int, min_identical: float) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= max_diff, f"max difference {diff.max()} > {max_diff}"
    same = float(np.mean(diff == 0))
    assert same >= min_identical, f"only {same:.5%} identical values"


def assert_rel(ours: np.ndarray, ref: np.ndarray, rel: float) -> None:
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    bound = rel * max(np.abs(ref).max(), 1e-30)
    err = np.abs(ours - ref).max()
    assert err <= bound, f"max |diff| {err:.3g} > {bound:.3g}"


def crop_info_of(size_wh, crop, quad) -> CropInfo:
    return CropInfo(
        tuple(int(v) for v in size_wh), tuple(int(v) for v in crop), tuple(float(v) for v in quad)
    )


class ScriptedLandmarks:
    """Landmark callable returning stored results in order, checking it is shown the expected picture."""

    def __init__(self, script: list[tuple[np.ndarray, np.ndarray]]):
        self.script = list(script)
        self.calls = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        assert self.calls < len(self.script), "landmark detector called more often than the official code"
        expected, lm = self.script[self.calls]
        self.calls += 1
        assert image.shape == expected.shape
        assert np.abs(image.astype(np.int16) - expected).max() <= 1
        return lm.copy()


@pytest.fixture(scope="module")
def recon_net_for(standins):
    """``recon_net_for(vector path)``: the stand-in reconstruction net loaded through the real loader."""

    def get(path: Path) -> torch.nn.Module:
        folder = standins.for_vector(path, names=(SAFETENSORS_256,))
        return load_recon_net(folder / SAFETENSORS_256, "cpu", torch.float32)

    return get


# ----------------------------------------------------------------------------------------------- prep_*
@pytest.mark.parametrize("path", PREP_FILES)
def test_standard_landmarks(path):
    v = _load(path)
    ours = load_standard_landmarks()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours.astype(np.float64), v["lm3d_std_5p"])
    derived = five_points(v["similarity_Lm3D_all_lm"].astype(np.float32))
    np.testing.assert_array_equal(derived.astype(np.float32), ours)


@pytest.mark.parametrize(("path", "mode"), PREP_MODES)
def test_crop_geometry_and_pictures(path, mode):
    v = _load(path)
    image = v["input_image_rgb"]
    p = f"{mode}_"
    plan = plan_crop(image, mode, ScriptedLandmarks([(image, v["lm68_orig"])]) if mode != "resize" else None)
    assert (plan.crop_info.crop_box is not None) == bool(v[p + "crop_info_has_boxes"])
    assert plan.crop_info.size_wh == tuple(int(x) for x in v[p + "crop_info_size_wh"])
    if mode != "resize":
        boxes = plan.boxes
        assert boxes.rsize == tuple(int(x) for x in v[p + "rsize"])
        assert boxes.crop_box == tuple(int(x) for x in v[p + "crop_box"])
        np.testing.assert_allclose(boxes.quad_box, v[p + "quad_box"], rtol=1e-9, atol=1e-9)
        assert plan.crop_info.quad_box_int() == tuple(int(x) for x in v[p + "quad_box"])
        np.testing.assert_array_equal(plan.region(image), v[p + "crop_region_rgb"])
    size = v[p + "pic256_rgb"].shape[0]
    assert_uint8_close(plan.picture(image, size), v[p + "pic256_rgb"], 1, 0.99)


@pytest.mark.parametrize(("path", "mode"), PREP_MODES)
def test_alignment(path, mode):
    v = _load(path)
    p = f"{mode}_"
    picture = v[p + "pic256_rgb"]
    std = load_standard_landmarks()
    lm_raw = v[p + "lm68_pic256"]
    lm_in, fallback = landmarks_for_alignment(
        None if _no_face(lm_raw) else lm_raw, std, *picture.shape[1::-1]
    )
    assert fallback == _no_face(lm_raw)
    np.testing.assert_allclose(lm_in, v[p + "align_lm_in"], rtol=1e-12, atol=1e-9)
    aligned = align_picture(picture, lm_in, std)
    np.testing.assert_allclose(aligned.trans_params, v[p + "trans_params_raw"], rtol=1e-9)
    assert_uint8_close(aligned.image, v[p + "img224_rgb"], 1, 0.99)
    np.testing.assert_allclose(aligned.landmarks, v[p + "align_lm_new"], rtol=1e-9, atol=1e-7)
    if np.array_equal(aligned.image, v[p + "img224_rgb"]):
        np.testing.assert_array_equal(network_input(aligned.image), v[p + "recon_input"])


@pytest.mark.parametrize(("path", "mode"), PREP_MODES)
def test_recon_net_output(path, mode, recon_net_for):
    v = _load(path)
    net = recon_net_for(path)
    with torch.inference_mode():
        out = net(torch.from_numpy(v[f"{mode}_recon_input"])).numpy()
    assert out.shape == (1, 257)
    assert_rel(out, v[f"{mode}_recon_output_257"], 1e-4)


@pytest.mark.parametrize(("path", "mode"), PREP_MODES)
def test_first_frame_record(path, mode, recon_net_for):
    v = _load(path)
    p = f"{mode}_"
    image = v["input_image_rgb"]
    script = [] if mode == "resize" else [(image, v["lm68_orig"])]
    script.append((v[p + "pic256_rgb"], v[p + "lm68_pic256"]))
    detector = ScriptedLandmarks(script)
    size = v[p + "pic256_rgb"].shape[0]
    rec = extract_source(
        image, mode, size, detector, recon_net_for(path), "cpu", torch.float32, use_cache=False
    )
    assert detector.calls == len(script)
    assert rec.used_fallback == _no_face(v[p + "lm68_pic256"])
    assert_uint8_close(rec.crop_picture, v[p + "pic256_rgb"], 1, 0.99)
    assert rec.crop_info.size_wh == tuple(int(x) for x in v[p + "crop_info_size_wh"])
    if mode != "resize":
        assert rec.crop_info.crop_box == tuple(int(x) for x in v[p + "crop_box"])
    ref73 = v[p + "mat_coeff_3dmm"]
    assert rec.coeff_3dmm.shape == ref73.shape == (1, 73) and rec.coeff_3dmm.dtype == np.float32
    assert_rel(rec.coeff_3dmm[:, :70], ref73[:, :70], 1e-4)
    np.testing.assert_allclose(rec.coeff_3dmm[:, 70:], ref73[:, 70:], rtol=1e-6)
    assert_rel(rec.full_3dmm, v[p + "mat_full_3dmm"], 1e-4)
    np.testing.assert_allclose(rec.trans_params, v[p + "trans_params_raw"], rtol=1e-9)
    assert rec.first_coeff.shape == (1, 73 if PreprocessMode.parse(mode).is_full else 70)


# ----------------------------------------------------------------------------------------------- paste
@pytest.mark.parametrize(("path", "mode"), PASTE_MODES)
def test_paste_back(path, mode):
    v = _load(path)
    p = f"{mode}_"
    info = crop_info_of(v[p + "crop_info_size_wh"], v[p + "crop_info_crop"], v[p + "crop_info_quad"])
    rendered = v[p + "rendered_crops_rgb"]
    size = rendered.shape[2]
    background_rgb = np.ascontiguousarray(v["full_image_bgr"][..., ::-1])
    paster = PasteBack(background_rgb, info, mode, size)
    for i in range(rendered.shape[0]):
        resized = aspect_resize(rendered[i], info, size)
        np.testing.assert_array_equal(resized, v[p + "resized_crops_rgb"][i])
        out_rgb = paster(rendered[i])
        # OpenCV builds differ by at most one grey level in seamlessClone (prep_paste .md).
        assert_uint8_close(out_rgb[..., ::-1], v[p + "paste_out_bgr"][i], 1, 0.999)


# ----------------------------------------------------------------------------------------------- e2e_*
@pytest.mark.parametrize("path", E2E_FILES)
def test_e2e_crop_and_first_frame(path, recon_net_for):
    v = _load(path)
    mode = str(v["preprocess"])
    image = v["input_image_rgb"]
    size = v["pic256_rgb"].shape[0]
    boxes = face_boxes(v["lm68_orig"], image.shape[1::-1])
    assert boxes.rsize == tuple(int(x) for x in v["align_face_rsize"])
    assert boxes.crop_box == tuple(int(x) for x in v["align_face_crop"])
    np.testing.assert_allclose(boxes.quad_box, v["align_face_quad"], rtol=1e-9, atol=1e-9)

    std = load_standard_landmarks()
    pic = v["pic256_rgb"]
    lm_raw = v["lm68_pic256"]
    lm_in, _ = landmarks_for_alignment(None if _no_face(lm_raw) else lm_raw, std, *pic.shape[1::-1])
    np.testing.assert_allclose(lm_in, v["align_lm_in"], rtol=1e-12, atol=1e-9)
    aligned = align_picture(pic, lm_in, std)
    np.testing.assert_allclose(aligned.landmarks, v["align_lm_new"], rtol=1e-9, atol=1e-7)
    if np.array_equal(aligned.image, v["img224_rgb"]):
        np.testing.assert_array_equal(network_input(aligned.image), v["recon_input"])

    detector = ScriptedLandmarks([(image, v["lm68_orig"]), (pic, lm_raw)])
    rec = extract_source(
        image, mode, size, detector, recon_net_for(path), "cpu", torch.float32, use_cache=False
    )
    info = rec.crop_info
    assert info.size_wh == tuple(int(x) for x in v["crop_info_size_wh"])
    assert info.crop_box == tuple(int(x) for x in v["crop_info_crop"])
    np.testing.assert_allclose(info.quad_box, v["crop_info_quad"], rtol=1e-9, atol=1e-9)
    assert_uint8_close(rec.crop_picture, v["pic256_rgb"], 1, 0.99)
    np.testing.assert_allclose(rec.trans_params, v["trans_params_raw"], rtol=1e-6)
    assert_uint8_close(rec.aligned, v["img224_rgb"], 1, 0.99)
    np.testing.assert_allclose(rec.full_3dmm, v["recon_output_257"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(rec.full_3dmm, v["first_full_3dmm_257"], rtol=0, atol=1e-4)
    ref73 = v["first_coeff_3dmm_73"]
    np.testing.assert_allclose(rec.coeff_3dmm[:, :70], ref73[:, :70], rtol=0, atol=1e-4)
    np.testing.assert_allclose(rec.coeff_3dmm[:, 70:], ref73[:, 70:], rtol=1e-6)
    channels = v["render_source_semantics"].shape[0]
    assert rec.first_coeff.shape == (1, channels)
    np.testing.assert_allclose(rec.first_coeff[0], v["render_source_semantics"][:, 0], rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("path", E2E_FILES)
def test_e2e_resize_and_paste(path):
    v = _load(path)
    mode = str(v["preprocess"])
    info = crop_info_of(v["crop_info_size_wh"], v["crop_info_crop"], v["crop_info_quad"])
    frames = v["frames256_uint8"]
    size = int(v["size"]) if "size" in v else frames.shape[1]
    for i in range(frames.shape[0]):
        assert_uint8_close(aspect_resize(frames[i], info, size), v["frames_resized_uint8"][i], 1, 0.99)
    if "paste_out_bgr" not in v:
        assert not PreprocessMode.parse(mode).is_full
        return
    paster = PasteBack(np.ascontiguousarray(v["input_image_rgb"]), info, mode, size)
    assert paster.centre == tuple(int(x) for x in v["paste_location"])
    x1, y1, x2, y2 = paster.box
    assert (y2 - y1, x2 - x1, 3) == tuple(int(x) for x in v["paste_patch_shape"])
    for row, index in enumerate(v["paste_out_index"]):
        out = paster.paste_resized(v["frames_resized_uint8"][index])
        assert_uint8_close(out[..., ::-1], v["paste_out_bgr"][row], 1, 0.999)
