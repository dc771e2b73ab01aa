"""The host adapter's fallbacks where A1111 1.6/1.7, 1.8+, Forge and SD.Next differ."""

from __future__ import annotations

import sys
import types

import numpy as np
import torch

from sadtalker_ext.webui.host import Host
from tests.webui.conftest import FakeRestorer


def test_paste_module_falls_back_to_the_1_6_name(webui, monkeypatch):
    from modules import infotext_utils

    assert Host().paste_module() is infotext_utils
    old = types.ModuleType("modules.generation_parameters_copypaste")
    for name in ("add_paste_fields", "register_paste_params_button", "ParamBinding"):
        setattr(old, name, getattr(infotext_utils, name))
    monkeypatch.setitem(sys.modules, "modules.infotext_utils", None)  # 1.6/1.7: no such module
    monkeypatch.setitem(sys.modules, "modules.generation_parameters_copypaste", old)
    assert Host().paste_module() is old


def test_device_without_get_device_for(webui, monkeypatch):
    from modules import devices

    monkeypatch.delattr(devices, "get_device_for")  # SD.Next
    monkeypatch.setattr(devices, "device", torch.device("cpu"))
    assert Host().device() == torch.device("cpu")
    webui.shared.cmd_opts.use_cpu = ["all"]  # Forge's get_device_for ignores the flag; we do not
    monkeypatch.setattr(devices, "get_device_for", lambda task: torch.device("meta"), raising=False)
    assert Host().device() == torch.device("cpu")


def test_face_restorers_by_name(webui):
    webui.shared.face_restorers.extend([FakeRestorer("None"), FakeRestorer("CodeFormer")])
    host = Host()
    assert host.face_restorer_names() == ["CodeFormer"]
    assert host.face_restorer("None") is None and host.face_restorer("GFPGAN") is None
    frame = np.full((4, 4, 3), 10, np.uint8)
    restored = host.face_restorer("CodeFormer")(frame)
    assert restored.dtype == np.uint8 and np.all(restored == 245)


def test_outputs_root_and_settings_before_registration(webui, tmp_path):
    host = Host()
    assert host.outputs_root() == webui.root / "outputs"
    webui.shared.opts.data["outdir_samples"] = "my-out"
    assert host.outputs_root() == webui.root / "my-out"  # relative to the data folder, as the host does
    assert host.opt("sadtalker_not_registered", 42) == 42
    assert host.cmd_opt("sadtalker_checkpoint_dir", "dflt") == "dflt"  # preload.py never ran


def test_mapping_file_loads_while_the_host_has_replaced_torch_load(webui, monkeypatch, tmp_path):
    """Regression (real A1111 1.10.1): modules/safe.py sets ``torch.load`` to a scanner that refuses
    files written by torch >= 2.1 (``.format_version`` entry), reports it and returns None. Our loader must
    not depend on that attribute: it reads with the real loader and weights_only=True."""
    import zipfile

    from sadtalker_ext.checkpoints import read_mapping_checkpoint

    path = tmp_path / "mapping_00229-model.pth.tar"
    torch.save({"mapping": {"w": torch.arange(3.0)}, "epoch": 229}, str(path))
    assert any(n.endswith("/.format_version") for n in zipfile.ZipFile(path).namelist())
    refused = []

    def host_like_load(filename, *args, **kwargs):  # what the host's replacement does with such a file
        refused.append(str(filename))  # (the host reports the refusal and returns None)

    monkeypatch.setattr(torch, "load", host_like_load)
    state = read_mapping_checkpoint(path)
    assert torch.equal(state["w"], torch.arange(3.0))
    assert refused == []
