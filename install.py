"""Run by the WebUI at start-up: install the extension's missing Python packages, nothing else.

Rules: one pip call for everything missing; never upgrade; never name the host's torch,
torchvision, gradio, numpy, Pillow or protobuf; honour --skip-install; download nothing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

# (distribution, import name, requirement): ranges chosen to resolve beside WebUI 1.10's pins.
REQUIREMENTS = [
    ("imageio-ffmpeg", "imageio_ffmpeg", "imageio-ffmpeg>=0.4.9,<0.9"),
    ("safetensors", "safetensors", "safetensors>=0.4.2"),
    ("scipy", "scipy", "scipy>=1.10"),
    ("soxr", "soxr", "soxr>=0.3"),
    ("soundfile", "soundfile", "soundfile>=0.12"),
    ("scikit-image", "skimage", "scikit-image>=0.19"),
    ("tqdm", "tqdm", "tqdm>=4.60"),
]
# opencv is in every WebUI; install the headless build only where no cv2 exists at all.
OPTIONAL_CV2 = ("opencv-python-headless", "cv2", "opencv-python-headless>=4.8,<5")
HOST_OWNED = {"torch", "torchvision", "gradio", "numpy", "pillow", "protobuf"}


def is_present(dist: str, module: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return importlib.util.find_spec(module) is not None


def missing_requirements() -> list[str]:
    out = [req for dist, mod, req in REQUIREMENTS if not is_present(dist, mod)]
    if importlib.util.find_spec(OPTIONAL_CV2[1]) is None:
        out.append(OPTIONAL_CV2[2])
    return out


def installed_pins() -> list[str]:
    """``name==version`` for every installed distribution: as pip constraints they forbid moving any of them."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name and dist.version:
            pins[name.lower()] = f"{name}=={dist.version}"
    return sorted(pins.values())


def skip_install_requested() -> bool:
    try:
        import launch  # the WebUI's launcher, present when run by the host

        return bool(getattr(launch.args, "skip_install", False))
    except Exception:
        return "--skip-install" in sys.argv


def main() -> int:
    missing = missing_requirements()
    for req in missing:
        assert req.split(">")[0].split("=")[0].split("<")[0].lower() not in HOST_OWNED
        print(f"[SadTalker] missing package: {req}")
    if not missing:
        return 0
    if skip_install_requested():
        print(
            "[SadTalker] --skip-install is set: not installing; the SadTalker tab will say what is missing."
        )
        return 0
    print(
        f"[SadTalker] installing {len(missing)} package(s) in one pip call; installed packages stay as they are"
    )
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "host-pins.txt"
        constraints.write_text("\n".join(installed_pins()) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--prefer-binary", "-c", str(constraints), *missing]
        result = subprocess.run(cmd, check=False, cwd=str(Path(__file__).resolve().parent))
    if result.returncode != 0:
        print(f"[SadTalker] pip failed (exit {result.returncode}); the tab will show what is missing.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
