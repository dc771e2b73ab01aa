"""Standalone web app: ``python -m sadtalker_ext.app`` (gradio, bound to 127.0.0.1 by default).

gradio is an optional dependency, imported only inside :func:`build_app` / :func:`main`; without it
``main`` says how to install it and exits with status 1. The form-to-options logic
(:func:`options_from_form`) and the status text (:func:`status_markdown`) are plain functions, so
they can be tested without gradio. The UI uses only components and arguments that gradio 3.41
(A1111 1.x) and 4.x both accept.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import SadTalkerError
from .form import options_from_values
from .options import (
    BACKGROUND_ENHANCERS,
    FACE_DETECTORS,
    IMPLEMENTED_ENHANCERS,
    PREPROCESS_MODES,
    REF_MODES,
    GenerationOptions,
)

log = logging.getLogger(__name__)

GRADIO_MISSING = (
    "The standalone app needs gradio, which is not installed in this environment. "
    "Install it with `pip install gradio` (3.41 or 4.x), or use the command line: `python -m sadtalker_ext --help`."
)

FORM_FIELDS = (
    "source", "driven_audio", "idle_mode", "idle_seconds", "ref_video", "ref_mode", "preprocess", "still",
    "pose_style", "expression_scale", "size", "batch_size", "use_blink", "seed", "input_yaw", "input_pitch",
    "input_roll", "face_detector", "face_index", "enhancer", "background_enhancer",
)  # fmt: skip
"""Order of the form components passed to the generate handler."""


def options_from_form(values: Mapping[str, Any]) -> GenerationOptions:
    """Form values (keys of :data:`FORM_FIELDS`) -> validated options. Seed < 0 or empty: random."""
    return options_from_values(values, {"front_end": "app"})


def status_markdown(talker: Any) -> str:
    """Weight files (present / missing / corrupt) and loaded models, as Markdown."""
    try:
        rows = talker.model_status()
    except SadTalkerError as exc:
        return f"**Model status unavailable:** {exc}"
    lines = [
        f"Checkpoints: `{talker.dirs.checkpoints}` ({talker.dirs.checkpoints_source}); "
        f"face models: `{talker.dirs.gfpgan}` ({talker.dirs.gfpgan_source})",
        "",
        "| file | state | needed for |",
        "|---|---|---|",
    ]
    for r in rows:
        mark = {"present": "present", "missing": "**missing**"}.get(r.state, f"**{r.state}**")
        lines.append(f"| {r.name} | {mark} | {', '.join(r.needed_for)} |")
    if any(r.state != "present" for r in rows):
        lines += ["", "Fetch missing files with `python -m sadtalker_ext.download` (see `--help` there)."]
    loaded = talker.loaded
    lines += ["", f"Device: `{talker.device}`, dtype `{str(talker.dtype).removeprefix('torch.')}`; "
              f"models in memory: {', '.join(loaded) if loaded else 'none'}"]  # fmt: skip
    return "\n".join(lines)


def build_app(talker: Any = None, **talker_kw: Any):
    """Build the gradio Blocks UI around one :class:`~sadtalker_ext.pipeline.SadTalker` (made from
    ``talker_kw`` when not given). Returns the ``gr.Blocks`` (not launched)."""
    import gradio as gr

    if talker is None:
        from .pipeline import SadTalker

        talker = SadTalker(**talker_kw)
    cancel_event = threading.Event()
    busy = threading.Lock()

    def generate(*values: Any, progress=gr.Progress()):  # noqa: B008 - gradio injects the tracker
        form = dict(zip(FORM_FIELDS, values, strict=True))
        try:
            options = options_from_form(form)
        except SadTalkerError as exc:
            raise gr.Error(str(exc)) from exc
        if not busy.acquire(blocking=False):
            raise gr.Error("a generation is already running; wait or press Stop")
        cancel_event.clear()
        try:

            def on_progress(stage: str, done: int, total: int) -> None:
                progress((done, max(total, 1)), desc=stage)

            result = talker.generate(options, progress=on_progress, cancel=cancel_event)
        except SadTalkerError as exc:
            raise gr.Error(str(exc)) from exc
        finally:
            busy.release()
        info = (
            f"{result.video_path}\n{result.num_frames} frames ({result.num_frames / 25:.2f} s), "
            f"{result.width}x{result.height}, seed {result.seed}\n"
            + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
        )
        return str(result.video_path), info, status_markdown(talker)

    def stop() -> str:
        cancel_event.set()
        return "stopping after the current batch of frames..."

    def unload() -> str:
        talker.unload()
        return status_markdown(talker)

    with gr.Blocks(title="SadTalker") as demo:
        gr.Markdown("## SadTalker: one face picture + speech -> talking-head video")
        with gr.Row():
            with gr.Column():
                source = gr.Image(label="Face picture", type="filepath")
                # gr.File, not gr.Audio / gr.Video: those re-encode uploads with a system ffmpeg/ffprobe
                # (absent on many machines); the pipeline decodes any format with the bundled ffmpeg.
                driven_audio = gr.File(label="Speech recording (wav, mp3, m4a, ... or a video)")
                with gr.Row():
                    idle_mode = gr.Checkbox(label="Idle mode (no speech)", value=False)
                    idle_seconds = gr.Number(label="Idle length (s)", value=5)
                with gr.Accordion("Reference video", open=False):
                    ref_video = gr.File(label="Reference video")
                    ref_mode = gr.Radio(list(REF_MODES), value="pose", label="The reference video provides")
            with gr.Column():
                preprocess = gr.Radio(list(PREPROCESS_MODES), value="crop", label="Preprocess")
                still = gr.Checkbox(label="Still mode (keep the source head pose)", value=False)
                pose_style = gr.Slider(0, 45, value=0, step=1, label="Pose style")
                expression_scale = gr.Slider(0.0, 3.0, value=1.0, step=0.05, label="Expression scale")
                size = gr.Radio([256, 512], value=256, label="Face renderer size")
                batch_size = gr.Slider(1, 16, value=2, step=1, label="Batch size (frames rendered at once)")
                use_blink = gr.Checkbox(label="Eye blinks", value=True)
                seed = gr.Number(label="Seed (-1: random)", value=-1, precision=0)
                with gr.Accordion("Free view and advanced", open=False):
                    input_yaw = gr.Textbox(label="Yaw keys (degrees, e.g. '0 20 -20')", value="")
                    input_pitch = gr.Textbox(label="Pitch keys (degrees)", value="")
                    input_roll = gr.Textbox(label="Roll keys (degrees)", value="")
                    face_detector = gr.Dropdown(
                        list(FACE_DETECTORS), value="retinaface", label="Face detector"
                    )
                    face_index = gr.Number(label="Face index (several faces)", value=0, precision=0)
                    enhancer = gr.Dropdown(
                        list(IMPLEMENTED_ENHANCERS),
                        value="none",
                        label="Face enhancer (gfpgan: GFPGAN v1.4 on the face crops)",
                    )
                    background_enhancer = gr.Dropdown(
                        list(BACKGROUND_ENHANCERS),
                        value="none",
                        label="Background enhancer (realesrgan: Real-ESRGAN x2, video 2x larger)",
                    )
            with gr.Column():
                video = gr.Video(label="Result")
                info = gr.Textbox(label="Details", lines=4)
                with gr.Row():
                    run_button = gr.Button("Generate", variant="primary")
                    stop_button = gr.Button("Stop")
        with gr.Accordion("Models", open=False):
            status = gr.Markdown(status_markdown(talker))
            with gr.Row():
                refresh_button = gr.Button("Refresh status")
                unload_button = gr.Button("Unload models")
        inputs = [
            source, driven_audio, idle_mode, idle_seconds, ref_video, ref_mode, preprocess, still, pose_style,
            expression_scale, size, batch_size, use_blink, seed, input_yaw, input_pitch, input_roll,
            face_detector, face_index, enhancer, background_enhancer,
        ]  # fmt: skip
        run_button.click(generate, inputs=inputs, outputs=[video, info, status])
        stop_button.click(stop, inputs=None, outputs=[info])
        refresh_button.click(lambda: status_markdown(talker), inputs=None, outputs=[status])
        unload_button.click(unload, inputs=None, outputs=[status])

    def shutdown(timeout: float | None = None) -> bool:
        """Stop a running generation and wait (``timeout`` seconds, ``None``: no limit) until it has
        cleaned up its files; False when it is still running."""
        cancel_event.set()
        if not busy.acquire(timeout=-1 if timeout is None else timeout):
            return False
        busy.release()
        return True

    demo.sadtalker = talker  # for tests and embedding
    demo.sadtalker_shutdown = shutdown
    return demo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sadtalker_ext.app", description="SadTalker standalone web app."
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    p.add_argument(
        "--checkpoint_dir", "--checkpoint-dir", dest="checkpoint_dir", help="SadTalker weights folder"
    )
    p.add_argument("--gfpgan_dir", "--gfpgan-dir", dest="gfpgan_dir", help="face-model weights folder")
    p.add_argument(
        "--result_dir", "--result-dir", dest="result_dir", default="./results", help="video folder"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument(
        "--no_winograd",
        "--no-winograd",
        dest="no_winograd",
        action="store_true",
        help="CPU, float32: direct decoder convolutions (about 1.7x slower, ~0.8 GB less memory)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import gradio  # noqa: F401
    except ImportError:
        log.error(GRADIO_MISSING)
        return 1
    from .cli import resolve_device

    try:
        demo = build_app(
            checkpoint_dir=args.checkpoint_dir,
            gfpgan_dir=args.gfpgan_dir,
            device=resolve_device(args.device, False),
            dtype=args.dtype,
            result_dir=args.result_dir,
            winograd=not args.no_winograd,
        )
    except SadTalkerError as exc:
        log.error("%s", exc)
        return 1
    terminated = threading.Event()
    shutdown = getattr(demo, "sadtalker_shutdown", None)

    def on_sigterm(signum: int, frame: Any) -> None:
        # like Ctrl-C: a running generation stops at its next batch and removes its temp files, and
        # gradio's launch() closes the server on the KeyboardInterrupt
        terminated.set()
        if shutdown is not None:
            shutdown(timeout=0)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if shutdown is not None:
            shutdown(timeout=120)
    return 143 if terminated.is_set() else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
