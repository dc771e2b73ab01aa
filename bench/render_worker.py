"""Long-lived renderer worker for ``bench --sections ratio``: one side of the official-vs-ours comparison.

Started by :mod:`bench.bench` as ``python -m bench.render_worker --side SIDE ...`` in its own process:

* ``official``: the official SadTalker code from a checkout that the parent puts on this process's
  ``PYTHONPATH`` (only here; never imported by our package): the networks built from the checkout's own
  ``src/config/facerender.yaml``, loaded by its ``AnimateFromCoeff`` (safetensors path + mapping file),
  the batch from its ``get_facerender_data`` (``.mat`` coefficients, picture file), frames from its
  ``make_animation``, reshaped as its ``AnimateFromCoeff.generate`` does.
* ``ours``: :class:`sadtalker_ext.render.animate.Renderer` on the same files.
* ``copy``: :func:`bench.baseline.iter_official_structure` (our copy of the official per-step structure).

Protocol: the worker loads the models, then answers one JSON line per request read from stdin
(``{"cmd": "run", "frames_out": PATH}`` renders all frames once and saves them ``(T, 3, S, S)`` float32
to ``PATH``; ``{"cmd": "quit"}`` ends it). Replies go to the original stdout; anything the rendering code
prints goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import types
from pathlib import Path

import numpy as np

MAP_CROP = "mapping_00229-model.pth.tar"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stub_unused_imports() -> None:
    """``src.facerender.animate`` imports video/enhancer helpers (torchvision, gfpgan, ...) that loading and
    ``make_animation`` never call; empty modules stand in for those that are not installed."""
    import importlib.util

    for name in ("torchvision", "src.utils.face_enhancer", "src.utils.paste_pic", "src.utils.videoio"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if found and not name.startswith("src.utils."):
            continue
        stub = types.ModuleType(name)
        for attr in (
            "enhancer_generator_with_len",
            "enhancer_list",
            "paste_pic",
            "save_video_with_watermark",
        ):
            setattr(stub, attr, None)
        sys.modules[name] = stub


class OfficialSide:
    """The official checkout's own loading, batch layout and ``make_animation``."""

    def __init__(self, args: argparse.Namespace) -> None:
        os.environ.setdefault("TQDM_DISABLE", "1")
        _stub_unused_imports()
        import torch
        from src.facerender.animate import AnimateFromCoeff
        from src.facerender.modules.make_animation import make_animation
        from src.generate_facerender_batch import get_facerender_data

        checkout = Path(args.official)
        paths = {
            "facerender_yaml": str(checkout / "src" / "config" / "facerender.yaml"),
            "checkpoint": str(Path(args.ckpt) / f"SadTalker_V0.0.2_{args.size}.safetensors"),
            "mappingnet_checkpoint": str(Path(args.ckpt) / MAP_CROP),
        }
        self.torch, self.make_animation = torch, make_animation
        self.anim = AnimateFromCoeff(paths, "cpu")
        work = Path(args.work)
        self.data = get_facerender_data(
            str(work / "target.mat"),
            args.picture,
            str(work / "source.mat"),
            None,
            args.batch_size,
            preprocess="crop",
            size=args.size,
        )

    def run(self) -> np.ndarray:
        d, a = self.data, self.anim
        video = self.make_animation(
            d["source_image"],
            d["source_semantics"],
            d["target_semantics_list"],
            a.generator,
            a.kp_extractor,
            a.he_estimator,
            a.mapping,
            use_exp=True,
        )
        frames = video.reshape((-1, *video.shape[2:]))[: d["frame_num"]]
        return frames.float().numpy()


class OursSide:
    """Our renderer (``copy=True``: our copy of the official per-step structure) on the same files."""

    def __init__(self, args: argparse.Namespace, copy: bool = False) -> None:
        import torch
        from PIL import Image

        from bench.bench import warm_up
        from sadtalker_ext.render.animate import Renderer, plan_render, source_image_tensor
        from sadtalker_ext.render.loading import load_renderer_nets

        coeffs = np.load(Path(args.work) / "coeffs.npz")
        self.plan = plan_render(coeffs["source"], coeffs["target"], batch_size=args.batch_size)
        rgb = np.asarray(Image.open(args.picture).convert("RGB"))
        self.image = source_image_tensor(rgb, args.size)
        self.device = torch.device("cpu")
        dtype = getattr(torch, args.dtype)
        self.nets = load_renderer_nets(Path(args.ckpt), args.size, "crop", self.device, dtype)
        self.copy = copy
        self.renderer = Renderer(self.nets, self.device)
        if dtype != torch.float32:  # one untimed call (oneDNN picks and packs its reduced-precision kernels)
            self.renderer.render_frames(
                self.renderer.prepare_source(self.image, self.plan.source_row),
                self.plan,
                self.plan.batches()[0],
            )
        warm_up(self.nets, self.image, self.device)  # once per process: the Winograd kernels

    def run(self) -> np.ndarray:
        import torch

        from bench.baseline import iter_official_structure

        out = np.zeros((self.plan.frame_count, *self.image.shape[1:]), np.float32)
        with torch.inference_mode():
            if self.copy:
                for positions, frames in iter_official_structure(
                    self.nets, self.image, self.plan, self.device
                ):
                    keep = positions < self.plan.frame_count
                    out[positions[keep]] = frames.float().numpy()[keep]
                return out
            source = self.renderer.prepare_source(self.image, self.plan.source_row)
            for positions in self.plan.batches():
                frames = self.renderer.render_frames(source, self.plan, positions)["prediction"]
                keep = positions < self.plan.frame_count
                out[positions[keep]] = frames.float().numpy()[keep]
        return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=("official", "ours", "copy"), required=True)
    p.add_argument("--official", help="official SadTalker checkout (side official)")
    p.add_argument("--ckpt", required=True, help="folder with the stand-in checkpoint files")
    p.add_argument("--work", required=True, help="folder with coeffs.npz, source.mat, target.mat")
    p.add_argument("--picture", required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="side ours")
    args = p.parse_args(argv)

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the rendering code prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr

    malloc_reuse = False
    if args.side == "ours":  # the allocator setting the CLI applies (reuse unless SADTALKER_MALLOC=default)
        from sadtalker_ext import allocator

        malloc_reuse = allocator.tune_from_environment()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    side = OfficialSide(args) if args.side == "official" else OursSide(args, copy=args.side == "copy")
    ready = {
        "ready": True,
        "side": args.side,
        "load_s": time.perf_counter() - t0,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "peak_rss_mb": peak_rss_mb(),
        "malloc_reuse": malloc_reuse,
    }
    proto.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("cmd") != "run":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        frames = side.run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        np.save(req["frames_out"], frames)
        reply = {"wall_s": wall, "cpu_s": cpu, "frames": int(frames.shape[0]), "peak_rss_mb": peak_rss_mb()}
        proto.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
