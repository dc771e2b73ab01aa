"""``modules.paths_internal``: the folders the host computes at start (root, data, models, outputs)."""
# ruff: noqa: PTH109, PTH118

import os

script_path = os.environ.get("FAKE_WEBUI_ROOT", os.getcwd())
data_path = script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
default_output_dir = os.path.join(data_path, "outputs")


def set_root(root: str) -> None:
    """Test helper: point every path at ``root`` (the real host fixes them once at start)."""
    global script_path, data_path, models_path, extensions_dir, extensions_builtin_dir, default_output_dir
    script_path = data_path = str(root)
    models_path = os.path.join(data_path, "models")
    extensions_dir = os.path.join(data_path, "extensions")
    extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
    default_output_dir = os.path.join(data_path, "outputs")
