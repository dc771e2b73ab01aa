"""``bench --official``: the checkout argument, the fallback to the structure copy, the machine line and the
worker's inputs, without an official checkout (the timed run itself is not tested)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import bench

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R)   Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R)   Platinum 8480+
flags\t\t: fpu sse2 avx avx2
"""


def test_cpuinfo_gives_model_and_instruction_sets():
    model, isa = bench.parse_cpuinfo(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert isa == ["AVX2", "AVX-512", "AVX-512-BF16", "AMX"]
    amd = "model name : AMD EPYC 7B13\nflags : fpu avx avx2 fma\n"
    assert bench.parse_cpuinfo(amd) == ("AMD EPYC 7B13", ["AVX2"])
    assert bench.parse_cpuinfo("") == ("unknown CPU", [])


def test_machine_line_names_cpu_isa_kernels_forced_level_and_load(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    info = bench.machine_info(capability="AVX2")
    info.update(cpu_model="Test CPU", cpu_count=2, isa=["AVX2", "AVX-512", "AMX"], load_avg=[1.5, 2.0, 3.25])
    line = bench.machine_line(info)
    assert line.startswith("Test CPU (2 CPUs; AVX2 / AVX-512 / AMX)")
    assert "torch CPU kernels AVX2 (ATEN_CPU_CAPABILITY=avx2)" in line
    assert line.endswith("load average 1.5 2.0 3.25")
    info.update(ATEN_CPU_CAPABILITY=None, isa=[])
    assert "no AVX2" in bench.machine_line(info) and "ATEN_CPU_CAPABILITY" not in bench.machine_line(info)


def test_official_checkout_from_argument_or_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(bench.OFFICIAL_ENV, raising=False)
    assert bench.official_checkout(None) is None
    (tmp_path / "src" / "facerender" / "modules").mkdir(parents=True)
    (tmp_path / "src" / "facerender" / "modules" / "make_animation.py").write_text("")
    assert bench.official_checkout(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv(bench.OFFICIAL_ENV, str(tmp_path))
    assert bench.official_checkout(None) == tmp_path.resolve()
    assert bench.parse_args(["--official", str(tmp_path), "--threads", "3"]).official == tmp_path
    assert bench.parse_args([]).threads == 2


def test_a_folder_that_is_not_a_checkout_is_refused_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(bench.OFFICIAL_ENV, str(tmp_path))
    with pytest.raises(SystemExit, match="not an official SadTalker checkout") as err:
        bench.official_checkout(None)
    assert "make_animation.py is missing" in str(err.value) and "clone" in str(err.value)


def _ratio_report(**fields) -> dict:
    """A :func:`bench.bench_ratio` result with made-up figures (baseline 1000 MiB, ours 1200 MiB); ``fields``
    replace or add entries."""
    r = {
        "baseline": "copy",
        "baseline_label": "",
        "batch_size": 2,
        "threads": 2,
        "frames": 8,
        "repeats": 2,
        "machine": bench.machine_info(),
        "worker_capability": {"copy": "AVX2", "ours": "AVX2"},
        "baseline_s_per_frame": [2.0, 3.0],
        "ours_s_per_frame": [1.0, 1.5],
        "baseline_cpu_s_per_frame": [2.0, 2.0],
        "ours_cpu_s_per_frame": [1.0, 1.0],
        "baseline_peak_rss_mb": 1000.0,
        "ours_peak_rss_mb": 1200.0,
        "ratio": [2.0, 2.0],
        "cpu_ratio": [2.0, 2.0],
        "ratio_median": 2.0,
        "cpu_ratio_median": 2.0,
        "load_avg": [[1.0], [1.0]],
        "max_abs_diff": 1e-3,
        "share_above_1e-3": 0.0,
    }
    return {**r, **fields}


def test_without_checkout_the_report_says_the_ratio_is_against_a_copy():
    label = bench.baseline_label(None)
    assert "COPY" in label and "against a copy" in label and "--official" in label
    official = bench.baseline_label(bench.REPO, "0123456789abcdef")
    assert (
        "official SadTalker code" in official
        and "0123456789ab" in official
        and "copy" not in official.lower()
    )
    info = bench.machine_info()
    r = _ratio_report(baseline="copy", baseline_label=label, machine=info)
    text = "\n".join(bench.ratio_markdown(r))
    assert "Renderer vs copy of the official structure" in text and "against a copy" in text
    assert bench.machine_line(info).split(";")[0] in text
    assert "ours uses +20 %" in text


def test_only_the_official_worker_gets_the_checkout_on_its_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    official = bench.worker_env("official", tmp_path, 2)
    ours = bench.worker_env("ours", tmp_path, 2)
    assert official["PYTHONPATH"] == str(tmp_path) and "PYTHONPATH" not in ours
    assert official["OMP_NUM_THREADS"] == ours["OMP_NUM_THREADS"] == "2"
    cmd = bench.worker_command("official", tmp_path, tmp_path, tmp_path / "p.png", tmp_path, 2)
    assert cmd[1:3] == ["-m", "bench.render_worker"] and cmd[cmd.index("--official") + 1] == str(tmp_path)
    assert "--official" not in bench.worker_command("ours", tmp_path, tmp_path, tmp_path / "p.png", None, 2)


def test_worker_inputs_match_the_synthetic_plan_in_both_formats(tmp_path):
    import scipy.io

    picture = bench.write_ratio_inputs(tmp_path, 5)
    src, tgt = bench.synthetic_coefficients(5)
    saved = np.load(tmp_path / "coeffs.npz")
    assert np.array_equal(saved["source"], src) and np.array_equal(saved["target"], tgt)
    assert scipy.io.loadmat(tmp_path / "source.mat")["coeff_3dmm"].shape == (1, 73)
    np.testing.assert_array_equal(scipy.io.loadmat(tmp_path / "target.mat")["coeff_3dmm"], tgt)
    assert np.array_equal(bench.synthetic_plan(5, 2).sequence[:, :70], tgt)
    from PIL import Image

    w, h = Image.open(picture).size
    assert w == h


def test_frame_difference_is_max_abs_and_share_above_threshold():
    a = np.zeros((2, 3, 4, 4), np.float32)
    b = a.copy()
    b[0, 0, 0, 0], b[1, 2, 3, 3] = 0.25, 5e-4
    d = bench.frame_difference(a, b)
    assert d["max_abs_diff"] == pytest.approx(0.25)
    assert d["share_above_1e-3"] == pytest.approx(1 / a.size)


def test_uint8_difference_counts_levels():
    ref = np.zeros((1, 3, 2, 2), np.float32)
    got = ref.copy()
    got[0, 0, 0, 0], got[0, 1, 0, 0] = 3 / 255, 1 / 255
    d = bench.uint8_difference(ref, got)
    assert d["max_levels"] == 3 and d["share_differing"] == pytest.approx(2 / 12)
    assert d["share_above_2"] == pytest.approx(1 / 12) and d["mean_levels"] == pytest.approx(4 / 12)


def test_ratio_report_gives_the_bfloat16_side_and_uint8_rows():
    r = _ratio_report(
        baseline="official",
        baseline_label="the official SadTalker code at X (commit 0123)",
        size=512,
        worker_capability={"official": "AVX512", "ours": "AVX512", "ours bfloat16": "AVX512"},
        uint8={"max_levels": 2, "share_differing": 0.005, "share_above_2": 0.0, "mean_levels": 0.01},
        bfloat16={
            "s_per_frame": [6.0, 5.0],
            "cpu_s_per_frame": [11.0, 10.0],
            "peak_rss_mb": 500.0,
            "ratio": [6.0, 7.2],
            "cpu_ratio": [5.8, 6.4],
            "max_abs_diff": 0.8,
            "share_above_1e-3": 0.6,
            "uint8": {"max_levels": 200, "share_differing": 0.5, "share_above_2": 0.1, "mean_levels": 1.5},
        },
    )
    text = "\n".join(bench.ratio_markdown(r))
    assert "Renderer vs official (512, batch 2" in text
    assert "| | official float32 | ours bfloat16 | official / ours |" in text
    assert "6.60x (repeats 6.00 / 7.20)" in text and "ours uses -50 %" in text  # 500 vs 1000 MiB
    assert "max 200 levels, 50.00 % of values differ, 10.000 % by more than 2" in text
    assert "max 2 levels, 0.50 % of values differ" in text and "ours uses +20 %" in text
