"""WebUI command-line flags of the SadTalker extension (read as shared.cmd_opts.sadtalker_*)."""


def preload(parser) -> None:
    parser.add_argument(
        "--sadtalker-checkpoint-dir",
        type=str,
        default=None,
        help="SadTalker: folder holding SadTalker_V0.0.2_*.safetensors and mapping_*-model.pth.tar",
    )
    parser.add_argument(
        "--sadtalker-gfpgan-dir",
        type=str,
        default=None,
        help="SadTalker: folder holding the face models (RetinaFace, AWing FAN, GFPGAN)",
    )
