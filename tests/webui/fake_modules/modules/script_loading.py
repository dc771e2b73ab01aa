"""``modules.script_loading.load_module``: module name = bare file name WITH ``.py``; not in sys.modules."""
# ruff: noqa: PTH119

import importlib.util
import os


def load_module(path):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
