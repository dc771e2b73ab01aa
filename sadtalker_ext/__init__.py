"""SadTalker for Stable Diffusion WebUI: one picture + speech -> talking-head video.

The package imports and runs without a WebUI; only ``scripts/`` and
``sadtalker_ext/webui/`` touch the host's ``modules``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
