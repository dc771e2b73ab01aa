"""Where one renderer frame's time goes: torch.profiler over ``Renderer.render_frames`` (size 256).

    python -m bench.profile_render [--checkpoint_dir DIR | --standin_dir DIR] [--batch_size 1] [--steps 2]

Prints (and writes with ``--out``) wall time per network region (forward hooks), self time per
operator category (3D / 2D convolutions by shape, Winograd products, grid sampling, norms, element-wise,
which includes the Winograd transforms) and wall time of each Winograd convolution, from the last of
``--steps`` profiled calls; the source work (``prepare_source``) is done before and not profiled.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.bench import load_average, source_image, synthetic_plan, weights_folder
from sadtalker_ext.nets import winograd
from sadtalker_ext.render.animate import Renderer
from sadtalker_ext.render.loading import load_renderer_nets

REGIONS = {
    "dense motion: hourglass (3D U-Net)": "generator.dense_motion_network.hourglass",
    "dense motion: mask conv 7x7x7": "generator.dense_motion_network.mask",
    "dense motion: occlusion conv 7x7": "generator.dense_motion_network.occlusion",
    "dense motion (whole)": "generator.dense_motion_network",
    "SPADE decoder (whole)": "generator.decoder",
    "third + fourth (2D after warp)": ("generator.third", "generator.fourth"),
    "mapping net (driving windows)": "mapping",
}


def category(name: str, shapes) -> str:
    if name in ("aten::mkldnn_convolution", "aten::convolution", "aten::_convolution"):
        if shapes and len(shapes[0]) == 5:
            return "3D convolution"
        return "2D convolution"
    if name == "aten::bmm":
        return "Winograd products (batched matmul)"
    if "grid_sampler" in name:
        return "grid sampling"
    if "batch_norm" in name or "instance_norm" in name:
        return "batch / instance norm"
    if "upsample" in name or "pool" in name:
        return "up/down sampling"
    if name in (
        "aten::add",
        "aten::mul",
        "aten::sub",
        "aten::div",
        "aten::clamp_min",
        "aten::leaky_relu",
        "aten::exp",
        "aten::pow",
        "aten::sigmoid",
        "aten::where",
        "aten::lt",
        "aten::add_",
        "aten::mul_",
    ):
        return "element-wise"
    if name in ("aten::cat", "aten::copy_", "aten::fill_", "aten::zero_", "aten::clone", "aten::contiguous"):
        return "copies / cat"
    return "other"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint_dir", type=Path)
    p.add_argument("--standin_dir", type=Path, default=Path("/tmp/sadtalker_bench_standins"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    ckpt = weights_folder(args.checkpoint_dir, args.standin_dir)[0]
    device, dtype = torch.device("cpu"), torch.float32
    nets = load_renderer_nets(ckpt, args.size, "crop", device, dtype)
    renderer = Renderer(nets, device)
    plan = synthetic_plan(args.batch_size * args.steps, args.batch_size)
    source = renderer.prepare_source(source_image(args.size, device), plan.source_row)

    region_time: dict[str, float] = collections.defaultdict(float)
    starts: dict[str, float] = {}
    modules = {"generator": nets.generator, "mapping": nets.mapping}
    handles = []
    for label, paths in REGIONS.items():
        for path in (paths,) if isinstance(paths, str) else paths:
            root, *rest = path.split(".")
            mod = modules[root].get_submodule(".".join(rest)) if rest else modules[root]
            key = f"{label}|{path}"

            def pre(_m, _i, key=key):
                starts[key] = time.perf_counter()

            def post(_m, _i, _o, key=key, label=label):
                region_time[label] += time.perf_counter() - starts.pop(key)

            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]

    # Winograd convolutions (products + transforms + any epilogue), wall time per (input shape, output channels)
    wino_time: dict[tuple, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    direct_wino = winograd.conv3x3

    def timed_wino(x, kernel, bias, epilogue=None):
        t0 = time.perf_counter()
        out = direct_wino(x, kernel, bias, epilogue)
        entry = wino_time[(tuple(x.shape), kernel.shape[1])]
        entry[0] += 1
        entry[1] += time.perf_counter() - t0
        return out

    batches = plan.batches()
    winograd.conv3x3 = timed_wino
    try:
        for positions in batches[:-1]:  # warm-up (also builds the Winograd kernels)
            renderer.render_frames(source, plan, positions)
        region_time.clear()
        wino_time.clear()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t0 = time.perf_counter()
            renderer.render_frames(source, plan, batches[-1])
            total = time.perf_counter() - t0
    finally:
        winograd.conv3x3 = direct_wino
        for h in handles:
            h.remove()

    per_cat: dict[str, float] = collections.defaultdict(float)
    per_shape: dict[tuple, float] = collections.defaultdict(float)
    for ev in prof.key_averages(group_by_input_shape=True):
        cat = category(ev.key, ev.input_shapes)
        per_cat[cat] += ev.self_cpu_time_total / 1e6
        if "convolution" in ev.key or "grid_sampler" in ev.key:
            per_shape[(ev.key, str(ev.input_shapes[:2]), ev.count)] += ev.self_cpu_time_total / 1e6
    prof_total = sum(per_cat.values())
    n = len(batches[-1])
    lines = [
        f"size {args.size}, batch {n}, one render_frames call: {total:.2f} s wall ({total / n:.2f} s/frame), "
        f"load average {load_average()}",
        "",
        "| region (forward hooks, wall) | s | share |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:.2f} | {v / total:.0%} |" for k, v in region_time.items()]
    lines += ["", "| operator category (profiler self time) | s | share |", "|---|---|---|"]
    lines += [
        f"| {k} | {v:.2f} | {v / prof_total:.0%} |" for k, v in sorted(per_cat.items(), key=lambda kv: -kv[1])
    ]
    lines += ["", "| top convolutions / grid samples (input, weight shapes) | calls | s |", "|---|---|---|"]
    for (key, shapes, count), v in sorted(per_shape.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"| {key.removeprefix('aten::')} {shapes} | {count} | {v:.2f} |")
    if wino_time:
        lines += [
            "",
            "| Winograd 3x3 convolutions (input shape -> output channels; products + transforms, wall) "
            "| calls | s |",
            "|---|---|---|",
        ]
        for (shape, co), (count, v) in sorted(wino_time.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"| {list(shape)} -> {co} | {count} | {v:.2f} |")
        wino_total = sum(v for _, v in wino_time.values())
        lines.append(
            f"| all | {sum(c for c, _ in wino_time.values())} | {wino_total:.2f} ({wino_total / total:.0%}) |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
