"""RetinaFace + AWing backend: official key layout, strict loading, shapes, anchor/decoding math, 98->68, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker_ext import face
from sadtalker_ext.errors import CheckpointError, InputError
from sadtalker_ext.face import RawDetection
from sadtalker_ext.face import retinaface_backend as rb
from sadtalker_ext.nets.awing import AWingConfig, AWingFAN
from sadtalker_ext.nets.retinaface import (
    RetinaFaceConfig,
    RetinaFaceR50,
    decode_boxes,
    decode_landmarks,
    prior_boxes,
)

KEYS_FILE = Path(__file__).resolve().parent.parent / "models" / "facexlib_face_keys.json"
SMALL_AWING = AWingConfig(num_modules=2, depth=2, features=32, input_size=64)


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def official_keys() -> dict:
    return json.loads(KEYS_FILE.read_text())


def test_keys_equal_facexlib(official_keys):
    assert _shapes(RetinaFaceR50()) == official_keys[rb.DETECTOR_FILE]
    assert _shapes(AWingFAN()) == official_keys[rb.ALIGNMENT_FILE]


def _random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Well-scaled random values for every tensor (conv weights ~ 1/sqrt(fan-in), positive BN variances)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if not v.is_floating_point():
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif v.dim() > 1:
            out[k] = torch.randn(v.shape, generator=g) / math.sqrt(v[0].numel())
        elif k.endswith("weight"):
            out[k] = 1 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
    return out


@pytest.fixture(scope="module")
def weight_dir(tmp_path_factory) -> Path:
    """Official file layouts with random values: detection flat with 'module.' prefixes, alignment wrapped."""
    d = tmp_path_factory.mktemp("gfpgan_weights")
    det = {f"module.{k}": v for k, v in _random_state(RetinaFaceR50(), 0).items()}
    torch.save(det, d / rb.DETECTOR_FILE)
    torch.save({"state_dict": _random_state(AWingFAN(), 1)}, d / rb.ALIGNMENT_FILE)
    return d


def test_strict_loading_from_official_layout(weight_dir):
    det = rb.load_detector(weight_dir)
    saved = torch.load(weight_dir / rb.DETECTOR_FILE, weights_only=True)
    for key in (
        "body.conv1.weight",
        "fpn.merge1.1.running_var",
        "LandmarkHead.2.conv1x1.bias",
        "ssh3.conv7x7_3.0.weight",
    ):
        assert torch.equal(det.state_dict()[key], saved[f"module.{key}"])
    assert not det.training
    ali = rb.load_alignment(weight_dir)
    saved = torch.load(weight_dir / rb.ALIGNMENT_FILE, weights_only=True)["state_dict"]
    for key in (
        "conv1.conv.weight",
        "m3.coordconv.conv.weight",
        "m0.b2_plus_1.conv3.weight",
        "al2.bias",
        "l3.weight",
    ):
        assert torch.equal(ali.state_dict()[key], saved[key])
    assert rb.load_alignment(weight_dir) is ali  # cached


def test_missing_and_broken_files(tmp_path, weight_dir):
    with pytest.raises(
        CheckpointError, match=rf"{rb.DETECTOR_FILE} not found in .*{tmp_path.name}.*gfpgan/weights"
    ):
        rb.load_detector(tmp_path)
    with pytest.raises(CheckpointError, match=rf"{rb.DETECTOR_FILE}, {rb.ALIGNMENT_FILE} not found"):
        face.landmarks68(np.zeros((64, 64, 3), np.uint8), "retinaface", tmp_path)
    (tmp_path / rb.DETECTOR_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        rb.load_detector(tmp_path)
    sd = RetinaFaceR50().state_dict()
    sd.pop("ClassHead.0.conv1x1.bias")
    sd["BboxHead.1.conv1x1.weight"] = torch.zeros(3, 256, 1, 1)
    torch.save(sd, tmp_path / rb.DETECTOR_FILE)
    with pytest.raises(CheckpointError, match=r"missing key.*shape mismatch"):
        rb.load_detector(tmp_path)


def test_retinaface_output_shapes():
    net = RetinaFaceR50().eval()
    with torch.no_grad():
        loc, scores, lms = net(torch.randn(2, 3, 70, 100))
    n = prior_boxes(70, 100, net.cfg).shape[0]
    assert n == sum(math.ceil(70 / s) * math.ceil(100 / s) * 2 for s in (8, 16, 32))
    assert loc.shape == (2, n, 4) and scores.shape == (2, n, 2) and lms.shape == (2, n, 10)
    torch.testing.assert_close(scores.sum(-1), torch.ones(2, n))


def test_awing_output_shapes():
    net = AWingFAN(SMALL_AWING).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64))
    assert len(out) == 2 and all(o.shape == (1, 99, 16, 16) for o in out)


def test_prior_boxes_layout():
    cfg = RetinaFaceConfig()
    h, w = 50, 70
    p = prior_boxes(h, w, cfg).double()
    assert p.dtype == torch.float64
    # level 0: first position, both anchor sizes
    torch.testing.assert_close(p[0], torch.tensor([4 / w, 4 / h, 16 / w, 16 / h], dtype=torch.float64))
    torch.testing.assert_close(p[1], torch.tensor([4 / w, 4 / h, 32 / w, 32 / h], dtype=torch.float64))
    # level 0, row 2, column 3
    cols0 = math.ceil(w / 8)
    torch.testing.assert_close(
        p[(2 * cols0 + 3) * 2][:2], torch.tensor([3.5 * 8 / w, 2.5 * 8 / h], dtype=torch.float64)
    )
    # level 2 (stride 32) starts after levels 0 and 1
    start = 2 * (math.ceil(h / 8) * cols0 + math.ceil(h / 16) * math.ceil(w / 16))
    cols2 = math.ceil(w / 32)
    idx = start + (1 * cols2 + 2) * 2 + 1
    expect = torch.tensor([2.5 * 32 / w, 1.5 * 32 / h, 512 / w, 512 / h], dtype=torch.float64)
    torch.testing.assert_close(p[idx], expect, rtol=1e-7, atol=1e-7)


def _encode(boxes: torch.Tensor, priors: torch.Tensor, v: tuple[float, float]) -> torch.Tensor:
    """Training-time encoding (inverse of decoding): centre offset / (v0 * prior size), log size ratio / v1."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.cat([(c - priors[:, :2]) / (v[0] * priors[:, 2:]), torch.log(wh / priors[:, 2:]) / v[1]], 1)


def test_decode_inverts_encode():
    cfg = RetinaFaceConfig()
    priors = prior_boxes(64, 96, cfg).double()
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(priors.shape[0], 2, generator=g, dtype=torch.float64)
    boxes = torch.cat([xy, xy + 0.05 + torch.rand(priors.shape[0], 2, generator=g, dtype=torch.float64)], 1)
    torch.testing.assert_close(
        decode_boxes(_encode(boxes, priors, cfg.variance), priors, cfg.variance), boxes
    )
    zero = decode_boxes(torch.zeros_like(priors), priors, cfg.variance)
    torch.testing.assert_close(
        zero, torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    )
    pts = torch.rand(priors.shape[0], 10, generator=g, dtype=torch.float64)
    off = (pts.view(-1, 5, 2) - priors[:, None, :2]) / (cfg.variance[0] * priors[:, None, 2:])
    torch.testing.assert_close(decode_landmarks(off.reshape(-1, 10), priors, cfg.variance), pts)


def test_nms_torchvision_semantics():
    dets = np.array(
        [
            [0, 0, 2, 2, 0.9],
            [1, 0, 3, 2, 0.8],  # IoU 1/3 with box 0: kept (with +1 pixel areas it would be 0.5 and dropped)
            [0, 0, 2, 1.5, 0.95],  # IoU 0.75 with box 0: box 0 dropped (lower score)
            [10, 10, 12, 12, 0.5],
        ],
        np.float32,
    )
    assert rb.nms(dets, 0.4) == [2, 1, 3]
    assert rb.nms(dets, 0.8) == [2, 0, 1, 3]


class _FakeDetector(torch.nn.Module):
    """Outputs chosen offsets/scores for given anchors (to test run_detector's decoding, filtering, NMS)."""

    def __init__(self, loc, scores, lms):
        super().__init__()
        self.cfg = RetinaFaceConfig()
        self.out = (loc[None], scores[None], lms[None])
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x)
        return self.out


def test_run_detector_pixels_threshold_order():
    cfg = RetinaFaceConfig()
    h, w = 64, 96
    priors = prior_boxes(h, w, cfg).double()
    n = priors.shape[0]
    scale = torch.tensor([w, h, w, h], dtype=torch.float64)
    wanted = {
        5: ([10, 12, 40, 50], 0.99),
        40: ([11, 12, 41, 50], 0.98),
        200: ([60, 5, 90, 30], 0.985),
        7: ([0, 0, 5, 5], 0.5),
    }
    loc = torch.zeros(n, 4, dtype=torch.float64)
    scores = torch.zeros(n, 2, dtype=torch.float64)
    scores[:, 0] = 1
    lms = torch.zeros(n, 10, dtype=torch.float64)
    for i, (box, s) in wanted.items():
        b = torch.tensor([box], dtype=torch.float64) / scale
        loc[i] = _encode(b, priors[i : i + 1], cfg.variance)[0]
        scores[i] = torch.tensor([1 - s, s])
    net = _FakeDetector(loc.float(), scores.float(), lms.float())
    image = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    dets, pts = rb.run_detector(net, image, conf_threshold=0.97)
    # 40 overlaps 5 (IoU > 0.4) and scores lower -> suppressed; 7 under the threshold
    np.testing.assert_allclose(dets[:, :4], [wanted[5][0], wanted[200][0]], atol=1e-3)
    np.testing.assert_allclose(dets[:, 4], [0.99, 0.985], atol=1e-6)
    np.testing.assert_allclose(pts[0], np.tile(priors[5, :2].numpy() * [w, h], 5), atol=1e-3)
    x = net.seen[0][0]
    torch.testing.assert_close(
        x[:, 3, 4], torch.tensor(image[3, 4], dtype=torch.float32) - torch.tensor(cfg.mean_bgr)
    )


def test_find_boxes_channel_order(monkeypatch):
    seen = []
    monkeypatch.setattr(rb, "load_detector", lambda model_dir, device, cache=None: "net")
    monkeypatch.setattr(rb, "require_files", lambda model_dir: None)
    monkeypatch.setattr(
        rb, "run_detector", lambda net, image, **kw: (seen.append(image.copy()), (np.zeros((0, 5)), None))[1]
    )
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 200
    assert rb.find_boxes(rgb, None) == []
    assert rb.find_boxes(rgb, None, detector_input="rgb") == []
    assert seen[0][0, 0, 2] == 200 and seen[1][0, 0, 0] == 200
    with pytest.raises(InputError, match="detector_input"):
        rb.find_boxes(rgb, None, detector_input="hsv")


def test_heatmap_points_rules():
    hm = np.zeros((1, 3, 64, 64), np.float32)
    hm[0, 0, 10, 20] = 5
    hm[0, 0, 10, 21] = 1  # right neighbour larger than left -> +0.25 in x
    hm[0, 0, 9, 20] = 2  # upper neighbour larger than lower -> -0.25 in y
    hm[0, 1, 30, 40] = 5  # symmetric neighbours -> no shift
    hm[0, 2, 50, 5] = 5
    hm[0, 2, 50, 4] = 1
    hm[0, 2, 51, 5] = 1
    pts = rb.heatmap_points(hm)
    np.testing.assert_array_equal(pts[0], [[20.75, 10.25], [40.5, 30.5], [5.25, 50.75]])
    # official quirk: one maximum in the last row makes EVERY point read flat cell 4095 as its lower neighbour
    hm[0, 1, 63, 40] = 9
    hm[0, 1, 63, 41] = 1
    hm[0, 1, 62, 40] = 1
    hm[0, 0, 63, 63] = 3  # channel 0: "below" becomes 3 > above 2 -> +0.25 instead of -0.25
    pts = rb.heatmap_points(hm)
    np.testing.assert_array_equal(pts[0], [[20.75, 10.75], [40.75, 63.25], [5.25, 50.5]])
    # (channel 2: its own lower neighbour (51, 5) = 1 is ignored, cell 4095 = 0 equals the upper one -> no shift)


def test_wflw98_to_68():
    p = np.stack([np.arange(98), 1000 + 2 * np.arange(98)], 1).astype(np.float64)
    lm = rb.wflw98_to_68(p)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    np.testing.assert_array_equal(lm[:17, 0], np.arange(0, 33, 2))
    np.testing.assert_array_equal(lm[17:27, 0], [33, 37.5, 37.5, 37.5, 37.5, 46, 46, 46, 46, 46])
    np.testing.assert_array_equal(lm[27:36, 0], np.arange(51, 60))
    np.testing.assert_array_equal(lm[36:48, 0], [60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75])
    np.testing.assert_array_equal(lm[48:, 0], np.arange(76, 96))
    np.testing.assert_array_equal(lm[:, 1], 1000 + 2 * lm[:, 0])


def test_landmarks_in_box_geometry():
    net = AWingFAN(SMALL_AWING).eval()
    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    box = (30.7, 20.2, 110.9, 100.5)
    lm = rb.landmarks_in_box(net, rgb, box)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    cw, ch = 110 - 30, 100 - 20
    assert (lm[:, 0] >= 30 + 0.25 * cw / 16 - 1e-4).all() and (lm[:, 0] <= 30 + 16.25 * cw / 16 + 1e-4).all()
    assert (lm[:, 1] >= 20 + 0.25 * ch / 16 - 1e-4).all() and (lm[:, 1] <= 20 + 16.25 * ch / 16 + 1e-4).all()
    # the net sees the crop resized to its input size, BGR, in [0, 1]
    seen = []
    net.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    rb.landmarks_in_box(net, rgb, box)
    assert seen[0].shape == (1, 3, 64, 64) and float(seen[0].max()) <= 1.0
    import cv2

    expect = cv2.resize(rgb[20:100, 30:110], (64, 64))[..., ::-1].transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(seen[0][0].numpy(), expect, atol=1e-6)


def test_real_layout_end_to_end_runs(weight_dir):
    """Random official-layout weights through the real loaders: boxes obey NMS, landmarks lie in the box."""
    rgb = np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    found = rb.find_boxes(rgb, weight_dir, conf_threshold=0.0)
    assert found and all(isinstance(d, RawDetection) for d in found)
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)
    boxes = np.array([d.box for d in found], np.float32)
    dets = np.hstack([boxes, np.array(scores, np.float32)[:, None]])
    assert rb.nms(dets, 0.4) == list(range(len(found)))  # already suppressed
    box = (10.0, 12.0, 70.0, 80.0)
    lm = rb.fit_landmarks(rgb, box, weight_dir)
    assert lm.shape == (68, 2) and (lm[:, 0] >= 10).all() and (lm[:, 0] <= 10 + 60 * 64.25 / 64).all()


def test_detect_faces_flow_with_stub_backend(monkeypatch):
    """Order by area, face_index errors, downscaled detection mapped back, boxes clipped (backend stubbed)."""
    calls = {}

    class Stub:
        @staticmethod
        def find_boxes(img, model_dir, device="cpu", cache=None):
            calls["shape"] = img.shape
            s = img.shape[1] / 1000
            return [
                RawDetection((100 * s, 100 * s, 200 * s, 200 * s), 0.99),
                RawDetection((-50 * s, 300 * s, 400 * s, 700 * s), 0.98),
            ]

        @staticmethod
        def fit_landmarks(img, box, model_dir, device="cpu", cache=None):
            calls.setdefault("boxes", []).append(box)
            return np.tile(np.array(box[:2], np.float32), (68, 1))

    monkeypatch.setattr(face, "_backend", lambda name: Stub)
    rgb = np.zeros((800, 1000, 3), np.uint8)
    faces = face.detect_faces(rgb, "stub", max_side=500)
    assert calls["shape"] == (400, 500, 3)
    np.testing.assert_allclose(calls["boxes"][0], (100, 100, 200, 200), atol=1e-9)
    assert faces[0].box == (0.0, 300.0, 400.0, 700.0) and faces[1].box == (100.0, 100.0, 200.0, 200.0)
    assert faces[0].lm68[0, 0] == pytest.approx(-50)  # landmarks see the unclipped box
    assert [f.score for f in face.detect_faces(rgb, "stub", order="score")] == [0.99, 0.98]
    np.testing.assert_array_equal(face.landmarks68(rgb, "stub", face_index=1), faces[1].lm68)
    with pytest.raises(InputError, match="only 2 face"):
        face.landmarks68(rgb, "stub", face_index=2)
    with pytest.raises(InputError, match="0 or more"):
        face.detect_faces(rgb, "stub", face_index=-1)
