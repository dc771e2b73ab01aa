"""What the pipeline tells CPU users about bfloat16, and where the precision choice shows its figures."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sadtalker_ext import precision
from sadtalker_ext.pipeline import SadTalker

CPU = torch.device("cpu")


def test_advice_for_each_cpu_case():
    has = precision.cpu_advice(CPU, torch.float32, has_bfloat16=True)
    assert "--dtype bfloat16 renders" in has and precision.BFLOAT16_SPEED in has
    assert precision.BFLOAT16_ERROR in has  # the cost is said with the gain
    lacks = precision.cpu_advice(CPU, torch.float32, has_bfloat16=False)
    assert "has no AMX" in lacks and precision.BFLOAT16_SPEED in lacks  # what a CPU with AMX would give
    slow = precision.cpu_advice(CPU, torch.bfloat16, has_bfloat16=False)
    assert precision.BFLOAT16_ELSEWHERE in slow and "use float32" in slow
    assert precision.cpu_advice(CPU, torch.bfloat16, has_bfloat16=True) is None
    assert precision.cpu_advice(torch.device("cuda"), torch.float32, has_bfloat16=False) is None


def test_the_pipeline_carries_the_advice_for_this_cpu(tmp_path):
    talker = SadTalker(tmp_path, tmp_path, device="cpu", dtype="bfloat16")
    expected = precision.cpu_advice(CPU, torch.bfloat16, has_bfloat16=precision.cpu_has_bfloat16())
    assert talker.precision_advice == expected
    assert SadTalker(tmp_path, tmp_path, device="cpu").precision_advice  # float32: always something to say


@pytest.mark.parametrize("module", ["sadtalker_ext", "sadtalker_ext.app"])
def test_help_of_the_front_ends_gives_the_measured_figures(module):
    res = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "bfloat16" in text and " ".join(precision.BFLOAT16_SPEED.split()) in text
    assert "uint8 levels" in text
