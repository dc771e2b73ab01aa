"""One generation through the tab's queue-wrapped handler with the REAL pipeline (tiny-width stand-in
renderer and dlib landmarks from tests/test_pipeline_e2e.py's fixtures): a real mp4 in the output folder,
the host progress state driven by the real stages, models kept between runs."""

from __future__ import annotations

from pathlib import Path

from tests.test_pipeline_e2e import media, tiny_checkpoints, vector  # noqa: F401 - shared fixtures
from tests.webui.conftest import form_values, real_extension


def test_real_pipeline_through_the_tab(webui, tiny_checkpoints, media, tmp_path, monkeypatch):  # noqa: F811
    from sadtalker_ext.video import probe
    from sadtalker_ext.webui import jobs
    from sadtalker_ext.webui.jobs import STAGES, generate_single

    ext = real_extension(webui, tiny_checkpoints, tmp_path)
    seen = []
    state = webui.shared.state
    original = jobs.HostProgress.__call__

    def spy(self, stage, done, total):
        original(self, stage, done, total)
        seen.append((stage, state.job_no, state.sampling_step, state.sampling_steps, state.textinfo))

    monkeypatch.setattr(jobs.HostProgress, "__call__", spy)
    wrapped = ext.host.wrap_gpu_call(lambda *a: generate_single(ext.session, *a), [None, ""])
    values = form_values(source=media["picture"], driven_audio=media["cut"](2), face_detector="dlib", seed=7)
    video, info, html_log = wrapped("task(real)", *values)
    assert video, html_log
    meta = probe(video)
    assert meta.num_frames == 2 and meta.has_audio
    assert Path(video).parent.parent == webui.root / "outputs" / "SadTalker"
    assert "Seed: 7" in info and "Frames: 2" in info
    assert state.job_count == 0  # the wrapper reset it after the run
    progress = webui.progress.recorded_results[-1]
    assert progress[0] == "task(real)"
    talker = ext.session._talker
    assert talker is not None and talker.loaded  # models kept for the next run (default setting)
    stages = [s[0] for s in seen]
    assert {"inputs", "models", "preprocess", "motion", "render", "encode"} <= set(stages)
    assert set(stages) <= set(STAGES)  # every stage the real pipeline reports has a progress-bar job
    job_nos = [s[1] for s in seen]
    assert job_nos == sorted(job_nos) and job_nos[-1] == STAGES.index("encode")
    assert ("render", STAGES.index("render"), 2, 2) in [s[:4] for s in seen]
    assert any("rendering frames 2/2" in s[4] for s in seen)
