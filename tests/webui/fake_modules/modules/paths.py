"""``modules.paths``: re-exports ``paths_internal`` (the real one also sets up sys.path)."""

from modules import paths_internal


def __getattr__(name):
    return getattr(paths_internal, name)
