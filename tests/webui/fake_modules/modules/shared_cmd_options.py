"""``modules.shared_cmd_options.cmd_opts``: the parsed flags (only the ones the extension reads)."""

import argparse


def fresh_cmd_opts(**overrides) -> argparse.Namespace:
    ns = argparse.Namespace(
        use_cpu=[], skip_install=False, data_dir=None, models_dir=None, api=False, nowebui=False,
        hide_ui_dir_config=False, listen=False, share=False, no_half=False, precision="autocast",
    )  # fmt: skip
    for k, v in overrides.items():
        setattr(ns, k, v)
    return ns


cmd_opts = fresh_cmd_opts()
