"""Resume: find the video an earlier run already made for a job (same input contents, same settings).

No Ray here: the driver decides before anything is sent to the cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..options import GenerationOptions
from ..provenance import settings_without_paths
from ..video.writer import sidecar_path


def _plain(value: Any) -> Any:
    """JSON round trip, so that tuples compare equal to the lists read back from a sidecar."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def numbered_outputs(base: Path) -> list[Path]:
    """``base`` and its ``<stem>-N.mp4`` siblings that exist (the names a batch gives when one is taken),
    ``base`` first, then by N."""
    pattern = re.compile(re.escape(base.stem) + r"(?:-(\d+))?" + re.escape(base.suffix) + r"$")
    found = []
    if base.parent.is_dir():
        for p in base.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m:
                found.append((int(m.group(1) or 1), p))
    return [p for _, p in sorted(found)]


def sidecar_matches(
    sidecar: Mapping[str, Any], options: GenerationOptions, digests: Mapping[str, str], dtype: str
) -> bool:
    """Whether a sidecar records a video of ``options`` (paths aside; the seed only when one is asked
    for) made from inputs with these ``digests`` in precision ``dtype``."""
    recorded = sidecar.get("options")
    if not isinstance(recorded, Mapping) or sidecar.get("dtype") != dtype:
        return False
    if _plain(dict(sidecar.get("inputs_sha256") or {})) != _plain(dict(digests)):
        return False
    want = settings_without_paths(_plain(options.to_dict()))
    have = settings_without_paths(dict(recorded))
    if options.seed is None:  # any seed will do: the earlier run picked one
        want.pop("seed", None)
        have.pop("seed", None)
    return have == want


def find_done(base: Path, options: GenerationOptions, digests: Mapping[str, str], dtype: str) -> Path | None:
    """The existing video (``base`` or a ``-N`` sibling) whose sidecar matches the job, else ``None``.
    A video counts only with its sidecar and a non-empty mp4 (an empty one is a name being written)."""
    for video in numbered_outputs(base):
        side = sidecar_path(video)
        try:
            if video.stat().st_size == 0:
                continue
            recorded = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(recorded, Mapping) and sidecar_matches(recorded, options, digests, dtype):
            return video
    return None
