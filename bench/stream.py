"""Streaming benchmark: ``POST /sadtalker/v1/stream`` as a client sees it, and the cost of fragmenting.

Run from the repository root::

    python -m bench.stream --quick                                   # CPU, reduced-width renderer, 2 s
    python -m bench.stream --checkpoint_dir /models/SadTalker --renderer official --device cuda \\
        --dtype float16 --seconds 10 --sizes 256 512 --batch_size 16

For each size: a fresh pipeline behind the real streaming route (:mod:`sadtalker_ext.http_stream`, served by
uvicorn on 127.0.0.1, client ``httpx``), one **cold** request (models load inside it) and ``--repeats``
**warm** ones. Per request:

* **first playable second**: from sending the request to the end of the first fragment (init segment + one
  second of video with its audio) received by the client;
* **stalls**: a player that starts when the first fragment is in and plays in real time would have to wait
  for fragment ``k`` if it arrives after ``start + (video before k) + stalls so far``; the count and total
  seconds of such waits (zero: playback never caught up with the stream);
* total request time, fragments, bytes.

Then the **overhead** of streaming on the total generation time: ``--overhead_repeats`` (default
``--repeats``; 0 skips it) alternated warm runs of
``SadTalker.generate`` with the normal writer and with the fragmented writer streaming into a sink that
discards, same process, same inputs (median ratio).

Weights: ``--checkpoint_dir`` (official files) or stand-ins (:mod:`bench.bench`); ``--renderer reduced``
(default) uses the reduced-width renderer, whose times are NOT the official renderer's (it checks that the
machinery runs; real figures need ``--renderer official``). Faces: dlib, or ``--landmarks FILE`` as in
:mod:`bench.bench`. Every report names the machine and the load average: figures taken under load are not
the machine's.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.bench import (
    MEDIA,
    build_reduced,
    load_average,
    log,
    machine_info,
    machine_line,
    recorded_landmarks,
    wav_of,
    weights_folder,
)
from bench.report import save_report
from sadtalker_ext.video.fmp4 import SegmentSplitter, read_fragments, top_level_boxes

FPS = 25


def stalls(arrivals: list[float], durations: list[float]) -> tuple[int, float]:
    """``(count, seconds)`` a real-time player waits, starting when fragment 0 is in (``arrivals``: when each
    fragment was fully received, seconds; ``durations``: seconds of video in each)."""
    if not arrivals:
        return 0, 0.0
    clock = arrivals[0]  # playback of fragment 0 starts here
    count, waited = 0, 0.0
    for arrived, length in zip(arrivals, durations, strict=True):
        if arrived > clock:
            count += 1
            waited += arrived - clock
            clock = arrived
        clock += length
    return count, round(waited, 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The streaming route around one pipeline, served by uvicorn in a thread."""

    def __init__(self, talker, roots: list[Path]) -> None:
        import uvicorn
        from fastapi import FastAPI

        from sadtalker_ext.http_request import parse_request
        from sadtalker_ext.http_stream import ROUTE, stream_response

        app = FastAPI()
        lock = threading.Lock()

        def prepare(body):
            tmp = Path(tempfile.mkdtemp(prefix="bench_stream_"))
            options, _, _ = parse_request(body, roots, tmp)

            def work(sink, cancelled, on_output):
                with lock:
                    return talker.generate(
                        options, cancel=cancelled, fragmented=True, stream=sink, on_output=on_output
                    )

            return work, "bench"

        async def route(request):
            return await stream_response(request, prepare)

        app.add_route(ROUTE, route, methods=["POST"])
        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}{ROUTE}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def one_request(url: str, body: dict) -> dict:
    """One streamed generation as the client sees it (times in seconds from sending the request)."""
    import httpx

    splitter, arrivals, durations, total = SegmentSplitter(), [], [], 0
    init_at = None
    t0 = time.perf_counter()
    with httpx.Client(timeout=None) as client, client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"stream answered {r.status_code}: {r.read().decode(errors='replace')}")
        for chunk in r.iter_raw():
            now = time.perf_counter() - t0
            total += len(chunk)
            for segment in splitter.feed(chunk):
                kinds = top_level_boxes(segment)
                if kinds[:1] == [b"ftyp"]:
                    init_at = now
                for frag in read_fragments(segment) if b"moof" in kinds else []:
                    video = frag.track(1)
                    arrivals.append(now)
                    durations.append((video.samples if video else 0) / FPS)
    end = time.perf_counter() - t0
    count, waited = stalls(arrivals, durations)
    return {
        "init_segment_s": None if init_at is None else round(init_at, 3),
        "first_playable_second_s": round(arrivals[0], 3) if arrivals else None,
        "stalls": count,
        "stalled_s": waited,
        "total_s": round(end, 3),
        "fragments": len(arrivals),
        "video_s": round(sum(durations), 3),
        "bytes": total,
        "load_avg": load_average(),
    }


def overhead(talker, options, repeats: int) -> dict:
    """Alternated warm generations, normal writer vs fragmented + streaming into a discarding sink."""
    normal, streamed = [], []
    for i in range(repeats):
        for label, kw, out in (
            ("normal", {}, normal),
            ("fragmented", {"fragmented": True, "stream": lambda data: None}, streamed),
        ):
            res = talker.generate(options.replace(output=None, seed=i), **kw)
            out.append(res.timings["total"])
            Path(res.video_path).unlink(missing_ok=True)
            log(f"overhead repeat {i} {label}: {res.timings['total']:.2f} s")
    ratios = [s / n for s, n in zip(streamed, normal, strict=True)]
    return {
        "normal_s": normal,
        "fragmented_streaming_s": streamed,
        "ratio_median": round(statistics.median(ratios), 4),
        "ratios": [round(r, 4) for r in ratios],
    }


def run(args) -> dict:
    """The whole benchmark in a temporary folder (removed afterwards)."""

    work = Path(tempfile.mkdtemp(prefix="sadtalker_bench_stream_"))
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args, work: Path) -> dict:
    from sadtalker_ext.pipeline import SadTalker

    ckpt, weights = weights_folder(args.checkpoint_dir, work / "standin")
    if args.renderer == "reduced":
        ckpt = build_reduced(ckpt, work / "reduced")
    wav = wav_of(args.seconds, work)
    report = {
        "machine": machine_line(machine_info()),
        "load_avg_start": load_average(),
        "device": args.device,
        "dtype": args.dtype,
        "renderer": args.renderer,
        "weights": weights,
        "seconds": args.seconds,
        "batch_size": args.batch_size,
        "sizes": {},
    }
    with recorded_landmarks(args.landmarks):
        for size in args.sizes:
            talker = SadTalker(
                checkpoint_dir=ckpt,
                gfpgan_dir=work / "no_gfpgan",
                device=args.device,
                dtype=args.dtype,
                result_dir=work / "out",
            )
            server = Server(talker, [work.resolve(), MEDIA.resolve()])
            body = {
                "source": str(MEDIA / "full3.png"),
                "driven_audio": str(wav),
                "size": size,
                "batch_size": args.batch_size,
                "preprocess": args.preprocess,
                "face_detector": "dlib",
                "seed": 0,
            }
            try:
                runs = []
                for i in range(1 + args.repeats):
                    runs.append(dict(one_request(server.url, body), warm=i > 0))
                    log(f"size {size} {'warm' if i else 'cold'}: {runs[-1]}")
                from sadtalker_ext.options import GenerationOptions

                opts = GenerationOptions.from_mapping(body)
                report["sizes"][str(size)] = {
                    "requests": runs,
                    "overhead": overhead(talker, opts, args.overhead_repeats)
                    if args.overhead_repeats
                    else None,
                }
            finally:
                server.close()
                talker.unload()
    report["load_avg_end"] = load_average()
    return report


def markdown(report: dict) -> str:
    lines = [
        f"Streaming: {report['seconds']:g} s of speech, renderer {report['renderer']}, {report['device']} "
        f"{report['dtype']}, batch {report['batch_size']}",
        f"Machine: {report['machine']} (at the start); load average at the end {report['load_avg_end']}",
        f"Weights: {report['weights']}",
        "",
        "| size | run | first playable second (s) | stalls (count / s) | total (s) | fragments |",
        "|---|---|---|---|---|---|",
    ]
    for size, data in report["sizes"].items():
        for run_ in data["requests"]:
            lines.append(
                f"| {size} | {'warm' if run_['warm'] else 'cold'} | {run_['first_playable_second_s']} | "
                f"{run_['stalls']} / {run_['stalled_s']} | {run_['total_s']} | {run_['fragments']} |"
            )
    overheads = {size: data["overhead"] for size, data in report["sizes"].items() if data["overhead"]}
    if overheads:
        lines += [
            "",
            "| size | normal (s) | fragmented + streaming (s) | median ratio |",
            "|---|---|---|---|",
        ]
    for size, o in overheads.items():
        lines.append(f"| {size} | {o['normal_s']} | {o['fragmented_streaming_s']} | {o['ratio_median']} |")
    if report["renderer"] == "reduced":
        lines += ["", "Reduced-width renderer: these times are not the official renderer's."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint_dir", type=Path, help="official weight folder (default: stand-ins)")
    p.add_argument("--renderer", choices=("reduced", "official"), default="reduced")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--sizes", type=int, nargs="+", default=[256])
    p.add_argument("--seconds", type=float, default=10.0, help="speech length")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--preprocess", default="crop")
    p.add_argument("--repeats", type=int, default=2, help="warm requests (and overhead repeats)")
    p.add_argument(
        "--overhead_repeats", type=int, help="normal/fragmented pairs (default: --repeats; 0: none)"
    )
    p.add_argument("--landmarks", type=Path, help="face landmarks from this .npz (see bench.bench)")
    p.add_argument("--quick", action="store_true", help="2 s of speech, one warm repeat")
    p.add_argument("--out", type=Path, help="folder for stream.json / stream.md")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 2.0, 1
    if args.overhead_repeats is None:
        args.overhead_repeats = args.repeats
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    report = run(args)
    text = markdown(report)
    if args.out is not None:
        save_report(args.out, "stream", report, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
