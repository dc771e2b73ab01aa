"""What the reduced precisions give, measured, and whether this CPU has the matrix unit (AMX) bfloat16 needs.

The figures are stated once here and shown wherever the precision is chosen (the ``--dtype`` help of the CLI
and the standalone app, the WebUI setting), and in the advice of :func:`cpu_advice` that a pipeline carries
(``SadTalker.precision_advice``) and the front ends show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI's --help shows these texts without it
    import torch

BFLOAT16_SPEED = "6.5-8x the official float32 renderer (2.7-3x ours in float32)"
"""Renderer speed in bfloat16 on a 2-core Xeon with AMX (``bench --sections ratio``, 256, batch 2)."""

BFLOAT16_ERROR = (
    "frames differ from float32 by 1.4 uint8 levels on average: 43 % of values by 1 level or more, 12 % by "
    "more than 2 (parity stand-in weights; real weights are not measured here)"
)
"""bfloat16 frames against the official float32 frames on the well-conditioned parity vectors."""

BFLOAT16_ELSEWHERE = (
    "without AMX bfloat16 is slower than float32: 0.7-0.9x per convolution with AVX-512-BF16 only, 0.2-0.3x "
    "with AVX-512, and far slower with AVX2 only"
)
"""bfloat16 convolutions on CPUs without AMX (oneDNN limited by ``ONEDNN_MAX_CPU_ISA`` on an AMX Xeon)."""

DTYPE_HELP = (
    "compute precision: float32 (default; matches the official code), float16 (GPU only), bfloat16 "
    f"(the renderer's per-frame convolutions; on CPUs with AMX {BFLOAT16_SPEED}; {BFLOAT16_ERROR}; "
    f"{BFLOAT16_ELSEWHERE})"
)
"""Help text of the precision choice in every front end."""


def cpu_has_bfloat16() -> bool:
    """Whether this CPU has AMX, the matrix unit that makes bfloat16 convolutions fast in torch's kernels
    (AVX-512-BF16 alone is not enough: there bfloat16 runs slower than float32)."""
    import torch

    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check()) if check is not None else False


def cpu_advice(device: torch.device, dtype: torch.dtype, *, has_bfloat16: bool | None = None) -> str | None:
    """A line for CPU users about bfloat16 (None on other devices, and for bfloat16 on a CPU with AMX): what
    bfloat16 gives on this CPU, or would give on one with AMX, or that it is slower here. ``has_bfloat16``:
    default :func:`cpu_has_bfloat16`."""
    import torch

    if device.type != "cpu":
        return None
    has = cpu_has_bfloat16() if has_bfloat16 is None else has_bfloat16
    if dtype == torch.float32 and has:
        return f"this CPU has AMX: --dtype bfloat16 renders {BFLOAT16_SPEED}; {BFLOAT16_ERROR}"
    if dtype == torch.float32:
        return (
            f"on a CPU with AMX, --dtype bfloat16 renders {BFLOAT16_SPEED}; this CPU has no AMX, so float32 "
            "is its fastest choice"
        )
    if dtype == torch.bfloat16 and not has:
        return (
            f"this CPU has no AMX: {BFLOAT16_ELSEWHERE}; use float32 (on a CPU with AMX bfloat16 renders "
            f"{BFLOAT16_SPEED})"
        )
    return None
