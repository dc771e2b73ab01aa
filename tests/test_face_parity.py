"""RetinaFace-ResNet50 and AWing FAN against the official facexlib 0.3.0 (face_retinaface_*, face_awing_*).

Stand-in weight files are built in the official containers (RetinaFace: the plain state dict; AWing:
``{'state_dict': sd}``) from fill.py with the vector's ``scale::`` / ``override::`` arrays, and loaded through
the project's real loaders (``torch.load(weights_only=True)``, strict). Seeds, pictures, boxes and thresholds
come from the files. Tolerances are those the vectors' .md files suggest (about 20-100x the measured 1 vs 2
thread noise).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker_ext.face import detect_faces
from sadtalker_ext.face.retinaface_backend import (
    ALIGNMENT_FILE,
    DETECTOR_FILE,
    find_boxes,
    heatmap_points,
    landmarks_in_box,
    load_alignment,
    load_detector,
    run_detector,
    wflw98_to_68,
)
from sadtalker_ext.nets.retinaface import decode_boxes, decode_landmarks, prior_boxes
from tests.conftest import parity_device, seed_of, vector_params
from tests.face_enhance_vectors import facexlib_manifest, load_npz, match_rows, save, vector_state

# .md tolerances
NET_ATOL = 1e-4  # loc, landms, conf
LOGIT_ATOL = 1e-3  # class logits (|logits| up to ~50)
PIXEL_ATOL = 5e-3  # decoded boxes / landmarks, pixels (up to ~1e3)
HEATMAP_RTOL = 1e-4  # of max |heatmap| per stack


def _seed(path: Path) -> int:
    with np.load(path, allow_pickle=False) as npz:
        return seed_of(npz, path)


def _detector_folder(path: Path, root: Path) -> Path:
    folder = root / path.stem
    vec = load_npz(path)
    state = vector_state(vec, facexlib_manifest(DETECTOR_FILE), _seed(path))
    save(state, folder / DETECTOR_FILE)
    # the backend wants both facexlib files; landmarks are checked on the face_awing vectors
    save(
        vector_state({}, facexlib_manifest(ALIGNMENT_FILE), _seed(path)),
        folder / ALIGNMENT_FILE,
        "state_dict",
    )
    return folder


def _alignment_file(path: Path, root: Path) -> Path:
    folder = root / path.stem
    vec = load_npz(path)
    state = vector_state(vec, facexlib_manifest(ALIGNMENT_FILE), _seed(path))
    save(state, folder / ALIGNMENT_FILE, "state_dict")
    return folder


def _per_vector(root: Path, write: Callable[[Path, Path], Path]) -> Callable[[Path], tuple[dict, Path]]:
    """``get(path) -> (vector, folder)``: ``write(path, root)`` makes the vector's weight folder, once."""
    made: dict[Path, tuple[dict, Path]] = {}

    def get(path: Path) -> tuple[dict, Path]:
        if path not in made:
            made[path] = (load_npz(path), write(path, root))
        return made[path]

    return get


def _capture_input(net: torch.nn.Module) -> tuple[list[torch.Tensor], object]:
    seen: list[torch.Tensor] = []
    handle = net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().cpu().clone()))
    return seen, handle


def _capture_output(net: torch.nn.Module) -> tuple[list, object]:
    seen: list = []
    handle = net.register_forward_hook(lambda _m, _i, out: seen.append(out))
    return seen, handle


def _threshold_of(name: str) -> float:
    """``dets_t097`` / ``dets_rgb_array_t097`` -> 0.97."""
    return int(re.search(r"_t(\d+)$", name).group(1)) / 100.0


@pytest.fixture(scope="module")
def retinaface(tmp_path_factory):
    """path -> (vector, folder holding the stand-in detection file)."""
    return _per_vector(tmp_path_factory.mktemp("retinaface"), _detector_folder)


@pytest.mark.parametrize("path", vector_params("face_retinaface_*.npz"))
def test_retinaface_raw_outputs_priors_and_decoding(retinaface, path):
    """The network's outputs for the stored input tensor, the prior boxes and the decoded boxes/points."""
    v, folder = retinaface(path)
    device = str(parity_device())
    net = load_detector(folder, device)
    x = torch.from_numpy(v["net_input"]).to(device)
    h, w = x.shape[2:]
    logits: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: logits.append(out)) for m in net.ClassHead]
    try:
        with torch.no_grad():
            loc, conf, landms = (t.cpu() for t in net(x))
    finally:
        for hk in hooks:
            hk.remove()
    diffs = {
        "loc": np.abs(loc.numpy() - v["loc"]).max(),
        "conf": np.abs(conf.numpy() - v["conf"]).max(),
        "landms": np.abs(landms.numpy() - v["landms"]).max(),
    }
    assert max(diffs.values()) <= NET_ATOL, diffs
    class_logits = torch.cat(logits, 1).cpu().numpy()
    assert np.abs(class_logits - v["class_logits"]).max() <= LOGIT_ATOL

    priors = prior_boxes(h, w, net.cfg)
    assert priors.shape == v["priors"].shape
    np.testing.assert_allclose(priors.numpy(), v["priors"], rtol=0, atol=1e-7)

    # decoding of the OFFICIAL raw outputs (isolates the decoder from network noise)
    variance = net.cfg.variance
    loc0, lm0, pri = (
        torch.from_numpy(v["loc"][0]),
        torch.from_numpy(v["landms"][0]),
        torch.from_numpy(v["priors"]),
    )
    boxes = decode_boxes(loc0, pri, variance) * torch.tensor([w, h] * 2, dtype=torch.float32)
    points = decode_landmarks(lm0, pri, variance) * torch.tensor([w, h] * 5, dtype=torch.float32)
    np.testing.assert_allclose(boxes.numpy(), v["boxes_decoded"], rtol=0, atol=PIXEL_ATOL)
    np.testing.assert_allclose(points.numpy(), v["landms_decoded"], rtol=0, atol=PIXEL_ATOL)
    np.testing.assert_allclose(conf[0, :, 1].numpy(), v["scores"], rtol=0, atol=NET_ATOL)


def _dets_calls(v: dict) -> list[tuple[str, str, float]]:
    """(array name, channel order the official call fed, threshold) for every ``dets_*`` array of a file."""
    calls = []
    for name in sorted(k for k in v if k.startswith("dets_")):
        order = "rgb" if name.startswith("dets_rgb_array_") else "bgr"
        calls.append((name, order, _threshold_of(name)))
    return calls


@pytest.mark.parametrize("path", vector_params("face_retinaface_*.npz"))
def test_retinaface_detections_at_recorded_thresholds(retinaface, path):
    """``detect_faces`` as facexlib returns it (decode, score threshold, NMS) for both SadTalker call sites:
    the PIL picture (converted to BGR) and the RGB numpy array passed unchanged; plus the input tensors."""
    v, folder = retinaface(path)
    device = str(parity_device())
    net = load_detector(folder, device)
    rgb = v["image_rgb"]
    nms_threshold = float(v["nms_threshold"])
    thresholds = [float(t) for t in v["conf_thresholds"]]
    calls = _dets_calls(v)
    assert {t for _, o, t in calls if o == "bgr"} == set(thresholds)
    public_checked = set()
    for name, order, threshold in calls:
        image = rgb[..., ::-1] if order == "bgr" else rgb
        seen, handle = _capture_input(net)
        outs, handle2 = _capture_output(net)
        try:
            dets, points = run_detector(
                net, image, conf_threshold=threshold, nms_threshold=nms_threshold, device=device
            )
        finally:
            handle.remove()
            handle2.remove()
        want_input = v["net_input"] if order == "bgr" else v["rgb_array_input"]
        np.testing.assert_array_equal(seen[0].numpy(), want_input)
        want = v[name]
        got = np.hstack((dets, points))
        assert got.shape == want.shape, (name, got.shape, want.shape)
        idx = match_rows(got, want)
        got = got[idx]
        cols = np.r_[0:4, 5:15]
        box_err = float(np.abs(got[:, cols] - want[:, cols]).max()) if len(want) else 0.0
        score_err = float(np.abs(got[:, 4] - want[:, 4]).max()) if len(want) else 0.0
        assert box_err <= PIXEL_ATOL and score_err <= NET_ATOL, (name, box_err, score_err)
        n_name = name.replace("dets_", "n_above_")
        if n_name in v:
            scores = outs[0][1][0, :, 1].cpu().numpy()
            assert int((scores > threshold).sum()) == int(v[n_name]), n_name

        if order not in public_checked:
            # the public entry point gives the same boxes and scores, highest score first
            public_checked.add(order)
            found = find_boxes(rgb, folder, device=device, detector_input=order, conf_threshold=threshold)
            boxes = np.array([(*d.box, d.score) for d in found], np.float32).reshape(-1, 5)
            np.testing.assert_array_equal(boxes, dets[:, :5])


@pytest.mark.parametrize("path", vector_params("face_retinaface_*.npz"))
def test_detect_faces_official_order_flag(retinaface, path):
    """``detect_faces(order="score", max_side=None)`` is facexlib's detection as SadTalker calls it on the full
    picture (``Croper.get_landmark``: RGB array, 0.97): same faces in the same (score) order; the default
    ``order="area"`` sorts the same faces by area. Boxes of ``Face`` are clipped to the picture."""
    v, folder = retinaface(path)
    name = next((n for n, o, _ in _dets_calls(v) if o == "rgb"), None)
    if name is None:
        pytest.skip("this vector file has no RGB-array detection call")
    threshold = _threshold_of(name)
    want = v[name]
    rgb = v["image_rgb"]
    h, w = rgb.shape[:2]
    common = {"detector_input": "rgb", "conf_threshold": threshold, "device": str(parity_device())}
    faces = detect_faces(rgb, "retinaface", folder, order="score", max_side=None, **common)
    assert len(faces) == len(want)
    scores = np.array([f.score for f in faces], np.float32)
    np.testing.assert_allclose(scores, want[:, 4], rtol=0, atol=NET_ATOL)
    clipped = np.clip(want[:, :4], 0, [w, h, w, h])
    np.testing.assert_allclose(np.array([f.box for f in faces]), clipped, rtol=0, atol=PIXEL_ATOL)

    by_area = detect_faces(rgb, "retinaface", folder, **common)
    areas = [f.area for f in by_area]
    assert areas == sorted(areas, reverse=True)
    assert sorted(f.score for f in by_area) == sorted(f.score for f in faces)


# ----------------------------------------------------------------------------------------------- AWing


@pytest.fixture(scope="module")
def awing(tmp_path_factory):
    """path -> (vector, folder holding the stand-in alignment file)."""
    return _per_vector(tmp_path_factory.mktemp("awing"), _alignment_file)


@pytest.mark.parametrize("path", vector_params("face_awing_*.npz"))
def test_awing_heatmaps_of_every_stack(awing, path):
    v, folder = awing(path)
    device = str(parity_device())
    net = load_alignment(folder, device)
    with torch.no_grad():
        outs = [o.cpu() for o in net(torch.from_numpy(v["net_input"]).to(device))]
    stacks = sorted(k for k in v if re.fullmatch(r"heatmaps_stack\d+", k))
    assert len(outs) == len(stacks) > 0
    for i, out in enumerate(outs):
        want = v[f"heatmaps_stack{i}"]
        rel = float(np.abs(out.numpy() - want).max() / np.abs(want).max())
        assert rel <= HEATMAP_RTOL, (i, rel)


@pytest.mark.parametrize("path", vector_params("face_awing_*.npz"))
def test_awing_decoding_and_98_to_68(awing, path):
    """facexlib's ``calculate_points`` (flattened-neighbour quirks) on the stored heatmaps, the scaling to the
    crop and ``landmark_98_to_68``: exact."""
    v, _ = awing(path)
    heat = v[f"heatmaps_stack{sum(k.startswith('heatmaps_stack') for k in v) - 1}"][:, :-1]
    pts = heatmap_points(heat)
    np.testing.assert_allclose(pts, v["points_heatmap"], rtol=0, atol=1e-9)
    ch, cw = v["crop_rgb"].shape[:2]
    hm = heat.shape[-1]
    lm98 = pts[0] * (cw / hm, ch / hm)
    np.testing.assert_allclose(lm98, v["landmarks98"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(wflw98_to_68(v["landmarks98"]), v["landmarks68"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("path", vector_params("face_awing_*.npz"))
def test_awing_landmarks_in_box(awing, path):
    """The project's landmark call on the picture and box: the crop, the network input (resize 256, BGR,
    / 255) and the final 68 points in picture pixels, as SadTalker gets them."""
    v, folder = awing(path)
    device = str(parity_device())
    net = load_alignment(folder, device)
    box = tuple(float(b) for b in v["box"])
    x1, y1, x2, y2 = (int(b) for b in box)
    np.testing.assert_array_equal(v["image_rgb"][y1:y2, x1:x2], v["crop_rgb"])
    seen, handle = _capture_input(net)
    try:
        lm = landmarks_in_box(net, v["image_rgb"], box, device)
    finally:
        handle.remove()
    np.testing.assert_array_equal(seen[0].numpy(), v["net_input"])
    assert lm.dtype == np.float32
    np.testing.assert_allclose(lm, v["landmarks68_image"], rtol=0, atol=1e-9)
