"""Saving a benchmark's report: the measured figures as ``NAME.json`` and their table as ``NAME.md``."""

from __future__ import annotations

import json
from pathlib import Path


def save_report(folder: Path, name: str, report: dict, text: str) -> None:
    """Write ``report`` to ``folder/NAME.json`` and the markdown ``text`` to ``folder/NAME.md``
    (``folder`` is created when missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(report, indent=1))
    (folder / f"{name}.md").write_text(text)
