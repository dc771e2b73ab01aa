"""``jobs.STAGES`` is exactly the set of stages the pipeline reports, in the order it reports them."""

from __future__ import annotations

import ast
from pathlib import Path

import sadtalker_ext.pipeline
from sadtalker_ext.webui import jobs


def _reported_stages() -> list[str]:
    """First arguments of the pipeline's ``report(...)`` / ``prep.report(...)`` calls, in source order."""
    tree = ast.parse(Path(sadtalker_ext.pipeline.__file__).read_text(encoding="utf-8"))
    stages: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name != "report":
            continue
        first = node.args[0]
        assert isinstance(first, ast.Constant) and isinstance(first.value, str), ast.dump(first)
        stages.append((node.lineno, first.value))
    ordered: list[str] = []
    for _, stage in sorted(stages):
        if stage not in ordered:
            ordered.append(stage)
    return ordered


def test_stages_are_the_pipelines_stages():
    reported = _reported_stages()
    assert "render" in reported and "encode" in reported  # the scan found the calls
    assert tuple(reported) == jobs.STAGES
    assert set(jobs.STAGE_LABELS) == set(jobs.STAGES)
