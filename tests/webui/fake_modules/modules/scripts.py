"""``modules.scripts``: basedir() is the extension folder only while its script file executes."""
# ruff: noqa: PTH119

import os
import sys

from modules import errors, paths_internal, script_loading

current_basedir = paths_internal.script_path


def basedir():
    return current_basedir


def load_extension_script(ext_dir: str, script_path: str):
    """What ``load_scripts()`` does for one file: prepend the extension folder to sys.path and set
    basedir during the import, then restore both (errors reported, not raised)."""
    global current_basedir
    syspath = sys.path
    try:
        sys.path = [ext_dir, *sys.path]
        current_basedir = ext_dir
        return script_loading.load_module(script_path)
    except Exception:
        errors.report(f"Error loading script: {os.path.basename(script_path)}", exc_info=True)
        return None
    finally:
        sys.path = syspath
        current_basedir = paths_internal.script_path
