"""``modules.shared``: opts, state, cmd_opts, face_restorers, OptionInfo; ``reset()`` is a test helper."""

from modules import options, shared_cmd_options, shared_state
from modules.options import OptionInfo, Options  # re-exported like the real module

cmd_opts = shared_cmd_options.cmd_opts
opts = Options()
state = shared_state.State()
face_restorers: list = []
demo = None
hide_dirs = {}


def _host_options() -> dict:
    """A few of the host's own options the extension may read."""
    return {
        "outdir_samples": OptionInfo(""),
        "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images"),
        "live_previews_enable": OptionInfo(True),
        "face_restoration_model": OptionInfo("CodeFormer"),
        "code_former_weight": OptionInfo(0.5),
    }


def reset(**cmd_overrides) -> None:
    """Test helper: a fresh host (new opts, state, flags; no face restorers)."""
    global opts, state, cmd_opts, face_restorers
    opts = Options(_host_options())
    state = shared_state.State()
    cmd_opts = shared_cmd_options.fresh_cmd_opts(**cmd_overrides)
    shared_cmd_options.cmd_opts = cmd_opts
    face_restorers = []
    options.categories = options.OptionsCategories()


reset()
__all__ = ["OptionInfo", "Options", "cmd_opts", "demo", "face_restorers", "opts", "reset", "state"]
