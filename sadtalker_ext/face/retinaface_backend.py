"""RetinaFace-ResNet50 boxes + AWing FAN landmarks (98 WFLW points mapped to 68), as official SadTalker.

Weight files (facexlib releases, never downloaded here), in the ``gfpgan/weights`` folder
(:func:`sadtalker_ext.paths.resolve_model_dirs`): ``detection_Resnet50_Final.pth`` (a flat state dict, keys
possibly prefixed ``module.``) and ``alignment_WFLW_4HG.pth`` (``{"state_dict": ...}``).

Official behaviour reproduced (SadTalker ``Preprocesser.get_landmark`` / ``KeypointExtractor.extract_keypoint``):

- detection at the original size, pixel values minus (104, 117, 123), confidence > 0.97, sort by score,
  NMS at IoU 0.4 (``torchvision.ops.nms`` semantics, facexlib 0.3.0);
- the box is cut with ``int()`` coordinates, resized to 256x256 (cv2 INTER_LINEAR), channels reversed to BGR,
  divided by 255; the last stack's 98 heatmaps are decoded (arg-max + quarter-pixel shift towards the larger
  neighbour + 0.5, AWing's rules) and scaled by (box width / 64, box height / 64); mapped to 68 points;
  ``int(x1)``, ``int(y1)`` added.
- channel order seen by the detector: official SadTalker gives it the RGB array unchanged on the full picture
  (``get_landmark``) but a BGR conversion on the 256 crop (``extract_keypoint`` with PIL images). The model was
  trained on BGR; ``detector_input="bgr"`` (default) converts, ``"rgb"`` reproduces ``get_landmark`` exactly.

Deviations, only in edge cases where the official code breaks: boxes starting left of / above the picture are
clipped to 0 before cutting (official: negative slice starts wrap around); a heatmap maximum in the very last
cell reads its right neighbour clamped (official: IndexError).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch

from ..checkpoints import ModelCache, cached, file_identity, load_strict, read_torch_pickle
from ..errors import CheckpointError, InputError
from ..nets.awing import AWingConfig, AWingFAN
from ..nets.retinaface import RetinaFaceConfig, RetinaFaceR50, decode_boxes, decode_landmarks, prior_boxes
from ..weights import ALIGNMENT_FILE, DETECTOR_FILE, download_url
from . import RawDetection

CONF_THRESHOLD = 0.97
NMS_THRESHOLD = 0.4
_Net = TypeVar("_Net", bound=torch.nn.Module)

# 68-point index -> pair of WFLW-98 indices averaged (equal indices: copied)
_WFLW_TO_68 = np.array(
    [(2 * i, 2 * i) for i in range(17)]
    + [(33, 33), (34, 41), (35, 40), (36, 39), (37, 38)]
    + [(42, 50), (43, 49), (44, 48), (45, 47), (46, 46)]
    + [(i, i) for i in range(51, 60)]
    + [(i, i) for i in (60, 61, 63, 64, 65, 67)]
    + [(i, i) for i in (68, 69, 71, 72, 73, 75)]
    + [(i, i) for i in range(76, 96)],
    dtype=np.int64,
)


def wflw98_to_68(points98: np.ndarray) -> np.ndarray:
    """(98, 2) WFLW landmarks -> (68, 2) float32 iBUG order: jaw = even WFLW contour points, eyebrows = the
    mean of upper and lower brow edge points, eyes = 6 of the 8 eye points, nose and mouth copied."""
    p = np.asarray(points98, dtype=np.float64)
    if p.shape != (98, 2):
        raise ValueError(f"expected (98, 2) landmarks, got {p.shape}")
    a, b = _WFLW_TO_68[:, 0], _WFLW_TO_68[:, 1]
    out = np.where((a == b)[:, None], p[a], (p[a] + p[b]) / 2)
    return out.astype(np.float32)


def heatmap_points(heatmaps: np.ndarray) -> np.ndarray:
    """(B, N, 64, 64) heatmaps -> (B, N, 2) float64 (x, y) in heatmap cells, AWing's decoding.

    x, y = arg-max cell (first maximum) + 0.25 * sign(right - left, below - above) + 0.5. The official code
    reads neighbours on the flattened map: left/right are index -1/+1 (wrapping across rows), and if ANY point's
    maximum lies in the last row (first row) all points use flat cell 4095 (0) as their lower (upper) neighbour.
    """
    hm = np.asarray(heatmaps)
    bsz, n, h, w = hm.shape
    flat = hm.reshape(bsz * n, h * w)
    idx = np.argmax(flat, axis=1)
    rows = np.arange(bsz * n)
    last = h * w - 1
    right = flat[rows, np.minimum(idx + 1, last)]
    left = flat[rows, idx - 1]  # -1 wraps to the last cell, as in the official code
    below = flat[rows, last] if np.any(idx + w >= last + 1) else flat[rows, idx + w]
    above = flat[rows, 0] if np.any(idx - w <= 0) else flat[rows, idx - w]
    pts = np.stack((idx % w, idx // w), axis=1).astype(np.float64)
    pts += np.sign(np.stack((right - left, below - above), axis=1)) * 0.25
    pts += 0.5
    return pts.reshape(bsz, n, 2)


def nms(dets: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS over (K, 5) float32 rows (x1, y1, x2, y2, score), as ``torchvision.ops.nms`` (what facexlib
    0.3.0 calls): areas ``(x2 - x1) * (y2 - y1)``, a box is dropped when its IoU with a kept box exceeds
    ``threshold``; stable descending score order. Returns kept row indices, highest score first."""
    d = np.asarray(dets, dtype=np.float32)
    x1, y1, x2, y2, score = (d[:, i] for i in range(5))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-score, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        with np.errstate(invalid="ignore", divide="ignore"):  # degenerate boxes: NaN IoU never suppresses
            iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > threshold)]
    return keep


# --------------------------------------------------------------------------------------------- weights


def _folder(model_dir: Path | str | None) -> Path:
    """``model_dir`` as a Path; the caller names the folder (``paths.resolve_model_dirs().gfpgan``), this
    backend does not look for it."""
    if model_dir is None:
        raise CheckpointError(
            f"the 'retinaface' face backend needs the gfpgan/weights folder holding {DETECTOR_FILE} and "
            f"{ALIGNMENT_FILE}: pass it as model_dir (sadtalker_ext.paths.resolve_model_dirs().gfpgan), "
            "or choose the 'dlib' face backend."
        )
    return Path(model_dir)


def require_files(
    model_dir: Path | str | None, names: tuple[str, ...] = (DETECTOR_FILE, ALIGNMENT_FILE)
) -> None:
    """CheckpointError naming every missing file of ``names`` and the folder they go into."""
    folder = _folder(model_dir)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        urls = ", ".join(download_url(n) for n in missing)
        raise CheckpointError(
            f"face model file(s) {', '.join(missing)} not found in {folder}. Put them (from {urls}) into that "
            "gfpgan/weights folder, or choose the 'dlib' face backend."
        )


def weight_path(model_dir: Path | str | None, name: str) -> Path:
    """``model_dir/name``; CheckpointError when missing (or ``model_dir`` is None)."""
    require_files(model_dir, (name,))
    return _folder(model_dir) / name


def _read(path: Path, component: str) -> dict[str, torch.Tensor]:
    obj = read_torch_pickle(path, component)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{component}: {path} does not hold a state dict of tensors; download it again."
        )
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _load_cached(
    model_dir: Path | str | None,
    name: str,
    component: str,
    tag: str,
    device: str,
    make: Callable[[], _Net],
    cache: ModelCache | None = None,
) -> _Net:
    """``make()`` with the weights of ``model_dir/name`` loaded strictly, on ``device``, eval mode; cached per
    (``tag``, file identity, device)."""
    path = weight_path(model_dir, name)

    def build() -> _Net:
        net = make()
        load_strict(net, _read(path, component), file=path, component=component)
        return net.to(device).eval()

    return cached((tag, *file_identity(path), device), build, cache)


def load_detector(
    model_dir: Path | str | None, device: str = "cpu", *, cache: ModelCache | None = None
) -> RetinaFaceR50:
    """RetinaFace-ResNet50 with weights from ``detection_Resnet50_Final.pth`` (strict), eval mode, cached."""
    return _load_cached(
        model_dir,
        DETECTOR_FILE,
        "RetinaFace detector",
        "retinaface-r50",
        device,
        lambda: RetinaFaceR50(RetinaFaceConfig()),
        cache,
    )


def load_alignment(
    model_dir: Path | str | None, device: str = "cpu", *, cache: ModelCache | None = None
) -> AWingFAN:
    """AWing FAN (4 stacks, 98 points) with weights from ``alignment_WFLW_4HG.pth`` (strict), eval mode, cached."""
    return _load_cached(
        model_dir,
        ALIGNMENT_FILE,
        "AWing landmark model",
        "awing-fan",
        device,
        lambda: AWingFAN(AWingConfig()),
        cache,
    )


# --------------------------------------------------------------------------------------------- inference


@torch.no_grad()
def run_detector(
    net: RetinaFaceR50,
    image: np.ndarray,
    *,
    conf_threshold: float = CONF_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) picture in the channel order the net should see -> ``boxes`` (K, 5) float32 (x1, y1, x2, y2,
    score) and ``points`` (K, 10) float32 five-point landmarks, pixels, highest score first after NMS."""
    h, w = image.shape[:2]
    cfg = net.cfg
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32).transpose(2, 0, 1))[None].to(device)
    x = x - torch.tensor(cfg.mean_bgr, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    loc, scores, lms = net(x)
    priors = prior_boxes(h, w, cfg).to(device)
    scale4 = torch.tensor([w, h] * 2, dtype=torch.float32, device=device)
    scale10 = torch.tensor([w, h] * 5, dtype=torch.float32, device=device)
    boxes = (decode_boxes(loc[0], priors, cfg.variance) * scale4).cpu().numpy()
    points = (decode_landmarks(lms[0], priors, cfg.variance) * scale10).cpu().numpy()
    conf = scores[0, :, 1].cpu().numpy()
    sel = np.where(conf > conf_threshold)[0]
    boxes, points, conf = boxes[sel], points[sel], conf[sel]
    order = conf.argsort()[::-1]
    dets = np.hstack((boxes[order], conf[order, None])).astype(np.float32, copy=False)
    keep = nms(dets, nms_threshold)
    return dets[keep], points[order][keep]


def find_boxes(
    rgb: np.ndarray,
    model_dir: Path | str | None = None,
    *,
    device: str = "cpu",
    detector_input: str = "bgr",
    conf_threshold: float = CONF_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    cache: ModelCache | None = None,
) -> list[RawDetection]:
    """RetinaFace detections of an (H, W, 3) uint8 RGB picture, highest score first (see module docstring
    for ``detector_input``)."""
    if detector_input not in ("bgr", "rgb"):
        raise InputError(f"detector_input must be 'bgr' or 'rgb', got {detector_input!r}")
    require_files(model_dir)
    image = rgb[..., ::-1] if detector_input == "bgr" else rgb
    dets, _ = run_detector(
        load_detector(model_dir, device, cache=cache),
        image,
        conf_threshold=conf_threshold,
        nms_threshold=nms_threshold,
        device=device,
    )
    return [RawDetection(tuple(float(v) for v in d[:4]), float(d[4])) for d in dets]


@torch.no_grad()
def landmarks_in_box(
    net: AWingFAN, rgb: np.ndarray, box: tuple[float, ...], device: str = "cpu"
) -> np.ndarray:
    """(68, 2) float32 landmarks of the face in ``box`` (pixels of ``rgb``) with an AWing net."""
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = int(box[2]), int(box[3])
    cut = rgb[y1:y2, x1:x2]
    if cut.shape[0] < 1 or cut.shape[1] < 1:
        raise InputError(f"face box {tuple(round(v, 1) for v in box)} is empty inside the picture")
    ch, cw = cut.shape[:2]
    size = net.cfg.input_size
    inp = cv2.resize(cut, (size, size))[..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(inp.transpose(2, 0, 1))).float().to(device)
    x = x.div(255.0)[None]
    heat = net(x)[-1][:, :-1].cpu().numpy()
    pts = heatmap_points(heat).reshape(-1, 2)
    hm = net.cfg.heatmap_size
    pts *= (cw / hm, ch / hm)
    lm = wflw98_to_68(pts)
    lm[:, 0] += x1
    lm[:, 1] += y1
    return lm


def fit_landmarks(
    rgb: np.ndarray,
    box: tuple[float, float, float, float],
    model_dir: Path | str | None = None,
    *,
    device: str = "cpu",
    cache: ModelCache | None = None,
) -> np.ndarray:
    """(68, 2) float32 landmarks for one detection box of an (H, W, 3) uint8 RGB picture."""
    return landmarks_in_box(load_alignment(model_dir, device, cache=cache), rgb, box, device)
