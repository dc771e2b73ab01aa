"""MappingNet: a window of 3DMM coefficients -> head pose bins, translation and keypoint offsets.

Weights: the ``mapping`` state dict of ``mapping_00229-model.pth.tar`` (70 inputs) or
``mapping_00109-model.pth.tar`` (73 inputs: 70 coefficients + crop parameters s, tx, ty).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MappingConfig:
    """Hyperparameters; defaults are the official ``mapping_params`` of facerender.yaml (coeff_nc 73 in the still yaml)."""

    coeff_nc: int = 70
    descriptor_nc: int = 1024
    layer: int = 3
    num_kp: int = 15
    num_bins: int = 66

    @classmethod
    def from_state_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> MappingConfig:
        """Infer the config from ``{key: shape}`` of a mapping state dict; ``ValueError`` if a key is absent."""
        try:
            first = shapes["first.0.weight"]
            exp_rows = shapes["fc_exp.weight"][0]
            bins = shapes["fc_yaw.weight"][0]
        except (KeyError, IndexError) as exc:
            raise ValueError(f"mapping state lacks key {exc}") from exc
        layers = sum(1 for k in shapes if k.startswith("encoder") and k.endswith(".1.weight"))
        if exp_rows % 3:
            raise ValueError(f"fc_exp.weight has {exp_rows} rows, not a multiple of 3")
        return cls(
            coeff_nc=int(first[1]),
            descriptor_nc=int(first[0]),
            layer=layers,
            num_kp=int(exp_rows) // 3,
            num_bins=int(bins),
        )


class _DilatedStep(nn.Sequential):
    """LeakyReLU(0.1) then Conv1d k3 dilation 3 without padding (length shrinks by 6). Key ``1``."""

    def __init__(self, channels: int):
        super().__init__(nn.LeakyReLU(0.1), nn.Conv1d(channels, channels, kernel_size=3, dilation=3))


class MappingNet(nn.Module):
    """``forward(semantics)``: ``(B, coeff_nc, T)`` with T = 27 (window of frames) -> dict of
    ``yaw``, ``pitch``, ``roll`` ``(B, num_bins)`` logits (bins of 3 degrees), ``t`` ``(B, 3)``,
    ``exp`` ``(B, 3 * num_kp)``.
    """

    def __init__(self, cfg: MappingConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MappingConfig()
        self.first = nn.Sequential(nn.Conv1d(cfg.coeff_nc, cfg.descriptor_nc, kernel_size=7))
        for i in range(cfg.layer):
            self.add_module(f"encoder{i}", _DilatedStep(cfg.descriptor_nc))
        self.fc_roll = nn.Linear(cfg.descriptor_nc, cfg.num_bins)
        self.fc_pitch = nn.Linear(cfg.descriptor_nc, cfg.num_bins)
        self.fc_yaw = nn.Linear(cfg.descriptor_nc, cfg.num_bins)
        self.fc_t = nn.Linear(cfg.descriptor_nc, 3)
        self.fc_exp = nn.Linear(cfg.descriptor_nc, 3 * cfg.num_kp)

    def forward(self, semantics: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.first(semantics)
        for i in range(self.cfg.layer):
            step = getattr(self, f"encoder{i}")
            h = step(h) + h[:, :, 3:-3]
        code = F.adaptive_avg_pool1d(h, 1).flatten(1)
        return {
            "yaw": self.fc_yaw(code),
            "pitch": self.fc_pitch(code),
            "roll": self.fc_roll(code),
            "t": self.fc_t(code),
            "exp": self.fc_exp(code),
        }
