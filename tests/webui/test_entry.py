"""The scripts/ entry loaded the way the host loads it, in a fresh interpreter: module name
``sadtalker_tab.py`` via spec_from_file_location, extension folder on sys.path only during the import,
under an arbitrary (symlinked) folder name; and a broken package still gives a tab showing the error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.webui.conftest import FAKE_MODULES, REPO

PROBE = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, {fake!r})
from modules import paths_internal, scripts, script_callbacks, errors
paths_internal.set_root({root!r}); scripts.current_basedir = {root!r}
ext = {ext!r}
before = list(sys.path)
mod = scripts.load_extension_script(ext, ext + "/scripts/sadtalker_tab.py")
after = list(sys.path)
script_callbacks.ui_settings_callback()
tabs = script_callbacks.ui_tabs_callback()   # runs after the import: the folder is no longer on sys.path
out = {{"name": getattr(mod, "__name__", None), "in_sys_modules": "sadtalker_tab.py" in sys.modules,
       "path_restored": before == after, "ext_on_path_after": ext in sys.path,
       "basedir_after": scripts.basedir(), "EXT_DIR": str(getattr(mod, "EXT_DIR", "")),
       "tabs": [(t[1], t[2]) for t in tabs], "errors": errors.reported,
       "html": [c.get("props", {{}}).get("value") for t in tabs for c in t[0].get_config_file()["components"]
                if c.get("type") == "html"]}}
if getattr(mod, "EXTENSION", None) is not None:
    import sadtalker_ext
    out["package_file"] = sadtalker_ext.__file__
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    r = TestClient(app).get("/sadtalker/v1/models")
    out["models_status"] = r.status_code
    out["models_files"] = len(r.json().get("files", []))
print("PROBE" + json.dumps(out))
"""


def _load(tmp_path: Path, ext: Path) -> dict:
    root = tmp_path / "webui"
    root.mkdir(exist_ok=True)
    code = PROBE.format(fake=str(FAKE_MODULES), root=str(root), ext=str(ext))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SADTALKER_CHECKPOINTS")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(root), env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE")), None)
    assert line, proc.stdout + proc.stderr
    return json.loads(line[5:])


def test_entry_loads_like_the_host_under_any_folder_name(tmp_path):
    ext = tmp_path / "webui" / "extensions" / "My SadTalker.ext-1"
    ext.parent.mkdir(parents=True)
    ext.symlink_to(REPO, target_is_directory=True)
    out = _load(tmp_path, ext)
    assert out["errors"] == []
    assert out["name"] == "sadtalker_tab.py" and not out["in_sys_modules"]
    assert out["path_restored"] and not out["ext_on_path_after"]
    assert out["basedir_after"] == str(tmp_path / "webui")
    assert out["EXT_DIR"] == str(ext)  # captured during the import: the symlink path the host uses
    assert out["tabs"] == [["SadTalker", "sadtalker"]]
    assert Path(out["package_file"]).parent.parent == ext  # the package came from this extension folder
    assert out["models_status"] == 200 and out["models_files"] > 0  # lazy imports work after the import


def test_broken_package_shows_an_error_tab(tmp_path):
    ext = tmp_path / "webui" / "extensions" / "sadtalker-broken"
    (ext / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "sadtalker_tab.py", ext / "scripts" / "sadtalker_tab.py")
    (ext / "sadtalker_ext").mkdir()
    (ext / "sadtalker_ext" / "__init__.py").write_text("raise ImportError('boom: librosa is missing')\n")
    out = _load(tmp_path, ext)
    assert out["errors"] == []  # the script itself loaded
    assert out["tabs"] == [["SadTalker", "sadtalker"]]
    html = "".join(h or "" for h in out["html"])
    assert "SadTalker could not start" in html and "boom: librosa is missing" in html
