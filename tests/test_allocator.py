"""The allocator setting of the project's processes: freed memory stays in the process (no page faults when the
same large blocks are allocated again) unless ``SADTALKER_MALLOC=default``, ``release_freed_memory`` gives it
back, and the CLI applies it before it starts threads.
Each case runs in a fresh process: the allocator's settings are per process and cannot be undone."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is for glibc only")

BLOCK_MIB = 64

# Allocates, fills and frees a 64 MiB block five times; reports page faults of the last four rounds and the
# resident memory with one block freed, before and after release_freed_memory().
PROBE = f"""
import json, resource, numpy as np
from sadtalker_ext import allocator
tuned = allocator.tune_from_environment()

def rss():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1]) // 1024

np.ones({BLOCK_MIB} * 2**20, np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    np.ones({BLOCK_MIB} * 2**20, np.uint8)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
held = rss()
allocator.release_freed_memory()
print(json.dumps({{"tuned": tuned, "faults": faults, "held_mib": held, "released_mib": rss()}}))
"""


def _probe(value: str | None) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "SADTALKER_MALLOC"}
    if value is not None:
        env["SADTALKER_MALLOC"] = value
    res = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


def test_reuse_keeps_freed_blocks_and_release_gives_them_back():
    default, _ = _probe("default")
    reuse, _ = _probe(None)  # the default of the project's processes
    assert default["tuned"] is False and reuse["tuned"] is True
    assert _probe("reuse")[0]["tuned"] is True
    # by default every round maps the block afresh: at least one fault per page (2 MiB ones with transparent
    # huge pages, 4 KiB ones without); kept for reuse, its pages stay mapped
    assert default["faults"] >= 4 * BLOCK_MIB // 2
    assert reuse["faults"] * 10 < default["faults"]
    assert reuse["held_mib"] - reuse["released_mib"] > BLOCK_MIB // 2  # malloc_trim gives it back


def test_unknown_value_is_named_and_ignored():
    out, stderr = _probe("fast")
    assert out["tuned"] is False
    assert "SADTALKER_MALLOC=fast is not understood" in stderr and "'reuse'" in stderr


@pytest.mark.parametrize(("value", "tuned"), [(None, True), ("default", False)])
def test_the_command_line_applies_it_at_start(tmp_path, value, tuned):
    env = {k: v for k, v in os.environ.items() if k != "SADTALKER_MALLOC"}
    if value is not None:
        env["SADTALKER_MALLOC"] = value
    res = subprocess.run(
        [sys.executable, "-m", "sadtalker_ext", "--verbose", "--source_image", str(tmp_path / "none.png"),
         "--driven_audio", str(tmp_path / "none.wav"), "--checkpoint_dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr  # the missing picture is refused as usual
    assert ("malloc tuned for tensor reuse: True" in res.stderr) is tuned
