"""Model manager: manifest data, status, and the downloader against a real loopback HTTP server.

The server (http.server in a thread on 127.0.0.1, ephemeral port) supports Range requests and can cut the
connection mid-file, answer 404, redirect, omit Content-Length or serve other bytes. Most tests serve
small stand-in files in the official formats (a subset of the official keys, written with fill.py via
tests/standin.py) described by a test manifest; one test fetches full-format stand-ins.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from sadtalker_ext import download as dl
from sadtalker_ext import weights as w
from sadtalker_ext.download import cli as dl_cli
from sadtalker_ext.errors import CancelledError
from sadtalker_ext.paths import ModelDirs
from tests import standin

ST256 = "SadTalker_V0.0.2_256.safetensors"
MAP229 = "mapping_00229-model.pth.tar"
GFP = "GFPGANv1.4.pth"
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------- server


@dataclass
class Site:
    """What the loopback server serves and what it saw."""

    files: dict[str, bytes | Path] = field(default_factory=dict)  # URL path -> content
    cut_once: dict[str, int] = field(default_factory=dict)  # URL path -> bytes sent before cutting (once)
    cut_always: dict[str, int] = field(default_factory=dict)
    no_length: set[str] = field(default_factory=set)
    redirects: dict[str, str] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # URL path -> HTTP status to answer (e.g. 503)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    sent: int = 0  # body bytes written
    proxied: list[str] = field(default_factory=list)  # hosts asked for through us as an HTTP proxy
    lock: threading.Lock = field(default_factory=threading.Lock)
    base: str = ""

    def paths_requested(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.requests]


def _size(content: bytes | Path) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


def _chunks(content: bytes | Path, start: int, limit: int):
    """Yield content[start:start+limit] in 1 MiB pieces."""
    if isinstance(content, bytes):
        for i in range(start, start + limit, 1 << 20):
            yield content[i : min(i + (1 << 20), start + limit)]
        return
    with content.open("rb") as fh:
        fh.seek(start)
        left = limit
        while left > 0:
            block = fh.read(min(1 << 20, left))
            if not block:
                return
            left -= len(block)
            yield block


def _handler(site: Site):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            target = urlsplit(self.path)  # absolute form when the client talks to us as a proxy
            path = target.path
            if target.netloc:
                with site.lock:
                    site.proxied.append(target.netloc)
            rng = self.headers.get("Range")
            with site.lock:
                site.requests.append((path, rng))
                cut = site.cut_once.pop(path, None)
            if cut is None:
                cut = site.cut_always.get(path)
            if path in site.errors:
                body = b"error"
                self.send_response(site.errors[path])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if path in site.redirects:
                self.send_response(302)
                self.send_header("Location", site.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            content = site.files.get(path)
            if content is None:
                body = b"not found"
                self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            size = _size(content)
            start = 0
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes=") : -1])
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            if path not in site.no_length:
                self.send_header("Content-Length", str(size - start))
            self.end_headers()
            limit = size - start if cut is None else min(cut, size - start)
            for block in _chunks(content, start, limit):
                self.wfile.write(block)
                with site.lock:
                    site.sent += len(block)
            if cut is not None:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

    return Handler


@pytest.fixture
def site():
    s = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(s))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    s.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield s
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """No proxy for loopback traffic, no real Hugging Face endpoint."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: never reached in these tests


# ----------------------------------------------------------------------------------------------- stand-ins


def _small_keys(name: str, limit: int, max_numel: int) -> list[str]:
    out = []
    for key, (shape, _dtype) in standin.manifest(name).items():
        if int(np.prod(shape)) <= max_numel:
            out.append(key)
        if len(out) == limit:
            break
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """Small official-format stand-ins (subset of keys) + their key data, written once per module."""
    root = tmp_path_factory.mktemp("small")
    st_keys = _small_keys(ST256, 24, 40_000)
    map_keys = [k for k in standin.manifest(MAP229) if ".fc_" in k]
    st = standin.write_checkpoint(ST256, standin.standin_tensors(ST256, 3, keys=set(st_keys)), root / "a")
    mp = standin.write_checkpoint(MAP229, standin.standin_tensors(MAP229, 3, keys=set(map_keys)), root / "a")
    # the same keys with one shape changed: a valid safetensors file with the wrong header
    bad = standin.standin_tensors(ST256, 3, keys=set(st_keys))
    victim = next(k for k in st_keys if bad[k].ndim >= 2)
    bad[victim] = np.zeros((bad[victim].shape[0] + 1, *bad[victim].shape[1:]), bad[victim].dtype)
    st_bad = standin.write_checkpoint(ST256, bad, root / "bad")
    gfp = np.random.default_rng(5).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    code = {"float32": "F32", "int64": "I64"}
    keys = {
        "sets": {
            "st": {"keys": {k: [list(standin.manifest(ST256)[k][0]), code[standin.manifest(ST256)[k][1]]]
                            for k in st_keys}},
            "map": {"keys": {k[len("mapping."):]: [list(standin.manifest(MAP229)[k][0]), "F32"]
                             for k in map_keys}},
        }
    }  # fmt: skip
    return {
        "root": root,
        ST256: st.read_bytes(),
        MAP229: mp.read_bytes(),
        GFP: gfp,
        "st_bad": st_bad.read_bytes(),
        "keys": keys,
        "victim": victim,
    }


def _entry(name: str, data: bytes, urls: list[str], *, size=True, sha=True, **extra) -> dict:
    fmt = {ST256: ("safetensors", "st"), MAP229: ("mapping", "map")}.get(name, ("torch", None))
    out = {
        "name": name,
        "dest": "gfpgan/weights" if name == GFP else "checkpoints",
        "size": len(data) if size else 0,
        "sha256": hashlib.sha256(data).hexdigest() if sha else "",
        "urls": urls,
        "format": fmt[0],
        "keys": fmt[1],
        "needed_for": ["enhancer"] if name == GFP else (["256"] if name == ST256 else ["crop"]),
        "notes": "test",
    }
    out.update(extra)
    return out


def _manifest(tmp: Path, entries: list[dict], keys: dict) -> w.Manifest:
    folder = tmp / "manifest"
    folder.mkdir(exist_ok=True)
    (folder / "keys.json").write_text(json.dumps(keys))
    (folder / "weights.json").write_text(json.dumps({"keys_file": "keys.json", "files": entries}))
    return w.load_manifest(folder / "weights.json")


def _dirs(tmp: Path) -> ModelDirs:
    return ModelDirs(tmp / "ckpt", tmp / "gfpgan" / "weights", "test", "test")


def _serve_all(site: Site, small: dict, prefix: str = "/gh") -> dict[str, str]:
    urls = {}
    for name in (ST256, MAP229, GFP):
        site.files[f"{prefix}/{name}"] = small[name]
        urls[name] = f"{site.base}{prefix}/{name}"
    return urls


def _no_leftovers(dirs: ModelDirs) -> list[Path]:
    return [p for d in (dirs.checkpoints, dirs.gfpgan) if d.exists() for p in d.iterdir()]


FAST = {"backoff": 0.0, "timeout": 10.0, "retries": 3}


# ----------------------------------------------------------------------------------------------- tests


def test_full_download_verifies_and_places_every_file(site, small, tmp_path):
    urls = _serve_all(site, small)
    man = _manifest(tmp_path, [_entry(n, small[n], [urls[n]]) for n in (ST256, MAP229, GFP)], small["keys"])
    dirs = _dirs(tmp_path)
    events: list[dl.Progress] = []
    report = dl.download(None, dirs, progress=events.append, manifest=man, **FAST)
    assert report.ok, report.summary()
    assert [r.status for r in report.results] == ["downloaded"] * 3
    assert (dirs.checkpoints / ST256).read_bytes() == small[ST256]
    assert (dirs.checkpoints / MAP229).read_bytes() == small[MAP229]
    assert (dirs.gfpgan / GFP).read_bytes() == small[GFP]
    assert sorted(p.name for p in _no_leftovers(dirs)) == sorted([ST256, MAP229, GFP])  # no .part files
    phases = {(e.name, e.phase) for e in events}
    assert {(n, "done") for n in (ST256, MAP229, GFP)} <= phases
    assert (ST256, "verify") in phases
    done = [e for e in events if e.phase == "download" and e.name == GFP]
    assert done and done[-1].total == len(small[GFP]) and all(e.count == 3 for e in events)


def test_resume_after_connection_cut_uses_range_and_is_byte_identical(site, small, tmp_path):
    urls = _serve_all(site, small, prefix="/files")
    cut_at = len(small[ST256]) // 3
    site.cut_once[f"/files/{ST256}"] = cut_at
    site.redirects[f"/gh/{ST256}"] = f"/files/{ST256}"  # like GitHub -> its CDN: Range must survive it
    urls[ST256] = f"{site.base}/gh/{ST256}"
    man = _manifest(tmp_path, [_entry(ST256, small[ST256], [urls[ST256]])], small["keys"])
    dirs = _dirs(tmp_path)
    events: list[dl.Progress] = []
    report = dl.download([ST256], dirs, progress=events.append, manifest=man, **FAST)
    assert report.ok, report.summary()
    ranges = [r for p, r in site.requests if p == f"/files/{ST256}"]
    assert ranges[0] is None and ranges[1] == f"bytes={cut_at}-", site.requests
    assert (dirs.checkpoints / ST256).read_bytes() == small[ST256]
    assert any(e.phase == "retry" for e in events)
    assert report.results[0].fetched_bytes == len(small[ST256])  # nothing fetched twice


def test_resume_from_part_file_of_an_earlier_run(site, small, tmp_path):
    urls = _serve_all(site, small)
    man = _manifest(tmp_path, [_entry(MAP229, small[MAP229], [urls[MAP229]])], small["keys"])
    dirs = _dirs(tmp_path)
    dirs.checkpoints.mkdir(parents=True)
    half = len(small[MAP229]) // 2
    (dirs.checkpoints / (MAP229 + ".part")).write_bytes(small[MAP229][:half])
    report = dl.download([MAP229], dirs, manifest=man, **FAST)
    assert report.ok, report.summary()
    assert site.requests == [(f"/gh/{MAP229}", f"bytes={half}-")]
    assert site.sent == len(small[MAP229]) - half
    assert (dirs.checkpoints / MAP229).read_bytes() == small[MAP229]
    assert not (dirs.checkpoints / (MAP229 + ".part")).exists()


@pytest.mark.parametrize("flaw", ["size", "sha256", "header", "no-length-size"])
def test_wrong_file_is_rejected_and_nothing_is_left_under_the_final_name(site, small, tmp_path, flaw):
    dirs = _dirs(tmp_path)
    path = f"/gh/{ST256}"
    good = small[ST256]
    if flaw == "size":  # server offers other bytes than the manifest says
        site.files[path] = good + b"\0" * 8
        entry = _entry(ST256, good, [site.base + path])
    elif flaw == "sha256":  # same size, one byte changed in the data
        bad = bytearray(good)
        bad[-5] ^= 0xFF
        site.files[path] = bytes(bad)
        entry = _entry(ST256, good, [site.base + path])
    elif flaw == "header":  # valid safetensors, one tensor of another shape; size and hash unknown
        site.files[path] = small["st_bad"]
        entry = _entry(ST256, good, [site.base + path], size=False, sha=False)
    else:  # no Content-Length: the whole body arrives, then the size check fails
        site.files[path] = good[:-16]
        site.no_length.add(path)
        entry = _entry(ST256, good, [site.base + path], sha=False)
    man = _manifest(tmp_path, [entry], small["keys"])
    report = dl.download([ST256], dirs, manifest=man, **FAST)
    assert not report.ok
    res = report.results[0]
    assert res.status == "failed"
    expected_words = {
        "size": "bytes",
        "sha256": "sha256",
        "header": small["victim"],
        "no-length-size": "bytes",
    }
    assert expected_words[flaw] in res.detail, res.detail
    assert _no_leftovers(dirs) == []  # neither the final name nor a .part of rejected bytes
    # a wrong file is not fetched again from the same source (without a length, the short body looks like a
    # cut connection: one resume attempt, whose 416 answer reveals the server's size)
    assert len(site.requests) == (2 if flaw == "no-length-size" else 1), site.requests


def test_bad_part_from_an_earlier_run_is_refetched_from_scratch(site, small, tmp_path):
    urls = _serve_all(site, small)
    man = _manifest(tmp_path, [_entry(GFP, small[GFP], [urls[GFP]])], small["keys"])
    dirs = _dirs(tmp_path)
    dirs.gfpgan.mkdir(parents=True)
    (dirs.gfpgan / (GFP + ".part")).write_bytes(b"\xff" * 1000)  # garbage prefix
    report = dl.download([GFP], dirs, manifest=man, **FAST)
    assert report.ok, report.summary()
    assert [r for _, r in site.requests] == ["bytes=1000-", None]
    assert (dirs.gfpgan / GFP).read_bytes() == small[GFP]


def test_official_sha256_wins_over_a_structure_complaint(small, tmp_path):
    # key data that disagrees with a file whose sha256 is the manifest's: hash-verified -> present (warned);
    # without the hash the structure check alone decides -> corrupt
    man = _manifest(tmp_path, [_entry(ST256, small["st_bad"], ["http://127.0.0.1:9/x"])], small["keys"])
    path = tmp_path / ST256
    path.write_bytes(small["st_bad"])
    state, detail = w.check_file(man.get(ST256), path, man, verify_hash=True)
    assert state == "present" and small["victim"] in detail
    assert w.check_file(man.get(ST256), path, man).state == "corrupt"


def test_proxy_from_the_environment_is_used(site, small, tmp_path, monkeypatch):
    site.files[f"/gh/{GFP}"] = small[GFP]
    # an unresolvable host: only reachable through the (loopback) proxy named in http_proxy
    man = _manifest(tmp_path, [_entry(GFP, small[GFP], [f"http://weights.invalid/gh/{GFP}"])], small["keys"])
    monkeypatch.setenv("http_proxy", site.base)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    report = dl.download([GFP], _dirs(tmp_path), manifest=man, **FAST)
    assert report.ok, report.summary()
    assert site.proxied == ["weights.invalid"] and site.paths_requested() == [f"/gh/{GFP}"]


def test_404_falls_back_to_the_next_source(site, small, tmp_path):
    site.files[f"/mirror/{ST256}"] = small[ST256]
    man = _manifest(tmp_path, [_entry(ST256, small[ST256], [f"{site.base}/gone/{ST256}"])], small["keys"])
    dirs = _dirs(tmp_path)
    # official URL 404 -> a mirror that has it: the mirror is tried first
    report = dl.download([ST256], dirs, manifest=man, mirror=f"{site.base}/mirror/", **FAST)
    assert report.ok and report.results[0].source == f"{site.base}/mirror/{ST256}"
    assert site.paths_requested() == [f"/mirror/{ST256}"]
    # mirror 404 -> the official URL
    (dirs.checkpoints / ST256).unlink()
    site.requests.clear()
    site.files[f"/gh/{ST256}"] = small[ST256]
    man = _manifest(tmp_path, [_entry(ST256, small[ST256], [f"{site.base}/gh/{ST256}"])], small["keys"])
    report = dl.download([ST256], dirs, manifest=man, mirror=f"{site.base}/empty", **FAST)
    assert report.ok, report.summary()
    assert site.paths_requested() == [f"/empty/{ST256}", f"/gh/{ST256}"]
    assert (dirs.checkpoints / ST256).read_bytes() == small[ST256]


def test_hugging_face_source_uses_hf_endpoint_after_a_redirect(site, small, tmp_path, monkeypatch):
    site.redirects[f"/gh/{MAP229}"] = f"/gone/{MAP229}"  # redirect to a 404
    site.files[f"/org/repo/resolve/abc123/sub/{MAP229}"] = small[MAP229]
    entry = _entry(MAP229, small[MAP229], [f"{site.base}/gh/{MAP229}"])
    entry["hf"] = {"repo": "org/repo", "revision": "abc123", "path": f"sub/{MAP229}"}
    man = _manifest(tmp_path, [entry], small["keys"])
    monkeypatch.setenv("HF_ENDPOINT", site.base + "/")
    report = dl.download([MAP229], _dirs(tmp_path), manifest=man, **FAST)
    assert report.ok, report.summary()
    assert site.paths_requested() == [
        f"/gh/{MAP229}",
        f"/gone/{MAP229}",
        f"/org/repo/resolve/abc123/sub/{MAP229}",
    ]


def test_bounded_retries_then_failure_keeps_only_the_part_file(site, small, tmp_path):
    urls = _serve_all(site, small)
    site.cut_always[f"/gh/{GFP}"] = 1000
    man = _manifest(tmp_path, [_entry(GFP, small[GFP], [urls[GFP]])], small["keys"])
    dirs = _dirs(tmp_path)
    report = dl.download([GFP], dirs, manifest=man, backoff=0.0, timeout=10.0, retries=2)
    assert report.results[0].status == "failed"
    assert len(site.requests) == 3  # 1 + 2 retries
    assert [r for _, r in site.requests] == [None, "bytes=1000-", "bytes=2000-"]
    assert not (dirs.gfpgan / GFP).exists()
    assert (dirs.gfpgan / (GFP + ".part")).read_bytes() == small[GFP][:3000]  # resumable next time
    # the next run resumes and finishes
    del site.cut_always[f"/gh/{GFP}"]
    assert dl.download([GFP], dirs, manifest=man, **FAST).ok
    assert (dirs.gfpgan / GFP).read_bytes() == small[GFP]


def test_existing_files_are_checked_not_downloaded_and_corrupt_ones_replaced_only_on_request(
    site, small, tmp_path
):
    urls = _serve_all(site, small)
    man = _manifest(tmp_path, [_entry(n, small[n], [urls[n]]) for n in (ST256, MAP229, GFP)], small["keys"])
    dirs = _dirs(tmp_path)
    dirs.checkpoints.mkdir(parents=True)
    dirs.gfpgan.mkdir(parents=True)
    (dirs.checkpoints / ST256).write_bytes(small[ST256])
    (dirs.checkpoints / MAP229).write_bytes(small[MAP229][:100])  # truncated
    flipped = bytearray(small[GFP])
    flipped[10] ^= 1
    (dirs.gfpgan / GFP).write_bytes(bytes(flipped))  # right size, wrong hash
    report = dl.download(None, dirs, manifest=man, **FAST)
    assert [r.status for r in report.results] == ["present", "corrupt", "present"]  # hash not asked
    assert not report.ok and site.requests == []
    assert (dirs.checkpoints / MAP229).read_bytes() == small[MAP229][:100]  # kept as is
    report = dl.download(None, dirs, manifest=man, verify_existing=True, **FAST)
    assert [r.status for r in report.results] == ["present", "corrupt", "corrupt"]
    assert site.requests == []
    report = dl.download(None, dirs, manifest=man, verify_existing=True, replace_corrupt=True, **FAST)
    assert [r.status for r in report.results] == ["present", "replaced", "replaced"], report.summary()
    assert sorted(site.paths_requested()) == sorted([f"/gh/{MAP229}", f"/gh/{GFP}"])
    assert (dirs.checkpoints / MAP229).read_bytes() == small[MAP229]
    assert (dirs.gfpgan / GFP).read_bytes() == small[GFP]


def test_model_status_reports_present_missing_corrupt(small, tmp_path):
    entries = [_entry(n, small[n], ["http://127.0.0.1:9/x"]) for n in (MAP229, GFP)]
    entries.insert(0, _entry(ST256, small[ST256], ["http://127.0.0.1:9/x"], size=False))  # size unknown
    man = _manifest(tmp_path, entries, small["keys"])
    dirs = _dirs(tmp_path)
    dirs.checkpoints.mkdir(parents=True)
    (dirs.checkpoints / ST256).write_bytes(small["st_bad"])  # header mismatch
    (dirs.checkpoints / MAP229).write_bytes(small[MAP229])
    rows = w.model_status(dirs, manifest=man)
    assert [(r.name, r.state) for r in rows] == [(ST256, "corrupt"), (MAP229, "present"), (GFP, "missing")]
    _name, _state, size, path, needed, _detail = rows[1]
    assert (size, path, needed) == (len(small[MAP229]), dirs.checkpoints / MAP229, ("crop",))
    assert small["victim"] in rows[0].detail
    for junk in (b"\0" * len(small[MAP229]), bytes(reversed(small[MAP229]))):  # right size, not a checkpoint
        (dirs.checkpoints / MAP229).write_bytes(junk)
        assert w.model_status(dirs, manifest=man, names=[MAP229])[0].state == "corrupt"


def test_dry_run_lists_missing_without_network(site, small, tmp_path, capsys):
    urls = _serve_all(site, small)
    man = _manifest(tmp_path, [_entry(n, small[n], [urls[n]]) for n in (ST256, MAP229, GFP)], small["keys"])
    dirs = _dirs(tmp_path)
    dirs.checkpoints.mkdir(parents=True)
    (dirs.checkpoints / MAP229).write_bytes(small[MAP229])
    report = dl.download(None, dirs, manifest=man, dry_run=True)
    assert [(r.name, r.status) for r in report.results] == [
        (ST256, "would-download"), (MAP229, "present"), (GFP, "would-download")
    ]  # fmt: skip
    assert report.results[0].source == urls[ST256]
    assert site.requests == [] and not (dirs.checkpoints / ST256).exists()
    man_path = man.source
    code = dl_cli.main(["--dry-run", "--all", "--manifest", str(man_path), "--checkpoint_dir", str(dirs.checkpoints),
                    "--gfpgan_dir", str(dirs.gfpgan)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1 and f"missing: {ST256}" in out and f"missing: {GFP}" in out and MAP229 not in out
    assert site.requests == []


def test_cli_downloads_through_a_mirror(site, small, tmp_path, capsys):
    for name in (ST256, MAP229):
        site.files[f"/m/{name}"] = small[name]
    entries = [_entry(n, small[n], [f"{site.base}/gh/{n}"]) for n in (ST256, MAP229, GFP)]
    man = _manifest(tmp_path, entries, small["keys"])
    dirs = _dirs(tmp_path)
    args = ["--manifest", str(man.source), "--checkpoint_dir", str(dirs.checkpoints), "--gfpgan_dir",
            str(dirs.gfpgan), "--mirror", f"{site.base}/m", "--no-tqdm", "--retries", "0"]  # fmt: skip
    assert dl_cli.main(args) == 0  # default selection: 256 + crop mapping, not the enhancer
    captured = capsys.readouterr()
    assert "downloaded" in captured.out and "downloaded and verified" in captured.err
    assert (dirs.checkpoints / ST256).read_bytes() == small[ST256]
    assert not (dirs.gfpgan / GFP).exists()
    assert (
        dl_cli.main([*args, "--enhancer"]) == 1
    )  # GFPGAN is on neither the mirror nor the official URL here
    assert "failed" in capsys.readouterr().out
    assert sorted(_no_leftovers(dirs)) == sorted(dirs.checkpoints / n for n in (ST256, MAP229))


def test_cancel_stops_the_transfer_and_keeps_the_part_for_resume(site, small, tmp_path, monkeypatch):
    urls = _serve_all(site, small)
    man = _manifest(tmp_path, [_entry(GFP, small[GFP], [urls[GFP]])], small["keys"])
    dirs = _dirs(tmp_path)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 1  # allow the first block, then stop

    monkey_chunk = 64 * 1024
    monkeypatch.setattr(dl, "CHUNK", monkey_chunk)
    with pytest.raises(CancelledError):
        dl.download([GFP], dirs, manifest=man, cancel=cancel, **FAST)
    assert not (dirs.gfpgan / GFP).exists()
    assert (dirs.gfpgan / (GFP + ".part")).read_bytes() == small[GFP][:monkey_chunk]
    assert dl.download([GFP], dirs, manifest=man, **FAST).ok
    assert site.requests[-1][1] == f"bytes={monkey_chunk}-"


def test_cli_progress_renders_with_tqdm_and_plain_lines():
    for use_tqdm in (True, False):
        stream = io.StringIO()
        render = dl_cli._CliProgress(stream=stream, use_tqdm=use_tqdm)
        for done in (0, 500, 1000):
            render(dl.Progress("f.bin", 1, 2, "download", done=done, total=1000, speed=100.0, eta=5.0))
        render(dl.Progress("f.bin", 1, 2, "done", done=1000, total=1000))
        render.close()
        text = stream.getvalue()
        assert "[1/2] f.bin" in text and "downloaded and verified" in text, text


@pytest.mark.slow
def test_real_format_standins_download_and_verify(site, standins, tmp_path):
    """Full-size official-format stand-ins, verified against the packaged key data file."""
    folder = standins.folder(0)
    names = [ST256, MAP229, "mapping_00109-model.pth.tar"]
    packaged = w.load_manifest()
    entries = []
    for name in names:
        src = folder / name
        site.files[f"/gh/{name}"] = src
        real = packaged.get(name)
        entries.append({
            "name": name, "dest": "checkpoints", "size": src.stat().st_size, "sha256": w.sha256_of(src),
            "urls": [f"{site.base}/gh/{name}"], "format": real.format, "keys": real.keys, "needed_for": ["x"],
        })  # fmt: skip
    keys_src = REPO / "models" / "sadtalker_v002_keys.json"
    man = _manifest(tmp_path, entries, json.loads(keys_src.read_text()))
    assert man.key_sets == packaged.key_sets
    dirs = _dirs(tmp_path)
    report = dl.download(names, dirs, manifest=man, **FAST)
    assert report.ok, report.summary()
    for entry in entries:
        assert w.sha256_of(dirs.checkpoints / entry["name"]) == entry["sha256"]
    assert [r.state for r in w.model_status(dirs, manifest=man)] == ["present"] * 3


# ----------------------------------------------------------------------------------------------- data


def test_packaged_key_data_equals_the_format_manifests():
    if not standin.FORMAT_DIR.is_dir():
        pytest.skip("shared/sadtalker-format not available")
    man = w.load_manifest()
    for wf in man.files:
        if wf.keys is None:
            continue
        official = json.loads((standin.FORMAT_DIR / f"{wf.name}.json").read_text())
        strip = "mapping." if wf.format == "mapping" else ""
        expected = {
            k[len(strip) :]: (tuple(v[0]), w.to_dtype_code(f"torch.{v[1]}")) for k, v in official.items()
        }
        assert man.key_sets[wf.keys] == expected, wf.name


def test_packaged_manifest_is_complete_and_well_formed():
    man = w.load_manifest()
    assert set(man.names) == {
        "SadTalker_V0.0.2_256.safetensors", "SadTalker_V0.0.2_512.safetensors", "mapping_00109-model.pth.tar",
        "mapping_00229-model.pth.tar", "GFPGANv1.4.pth", "detection_Resnet50_Final.pth",
        "alignment_WFLW_4HG.pth", "parsing_parsenet.pth", "RealESRGAN_x2plus.pth",
    }  # fmt: skip
    for wf in man.files:
        assert wf.dest in (w.DEST_CHECKPOINTS, w.DEST_GFPGAN)
        assert wf.size >= 0 and (wf.sha256 == "" or (len(wf.sha256) == 64 and int(wf.sha256, 16) >= 0))
        assert wf.urls and all(
            u.startswith("https://github.com/") and u.endswith("/" + wf.name) for u in wf.urls
        )
        assert wf.notes and set(wf.needed_for) <= set(w.FEATURES)
        if wf.format in ("safetensors", "mapping"):
            assert wf.keys in man.key_sets and wf.hf is not None
    # a mirror goes first, the HF endpoint is taken from the environment at call time
    wf = man.get(ST256)
    src = wf.sources("https://m.example/x/", "https://hf.example")
    assert src[0] == f"https://m.example/x/{ST256}" and src[-1].startswith("https://hf.example/vinthony/")


def test_selection_and_missing_message(tmp_path):
    man = w.load_manifest()
    assert w.Selection().names(man) == [ST256, MAP229]
    full = w.required_files(512, "extfull", enhancer=True)
    assert set(full.names(man)) == {  # the enhancer: GFPGAN + the official arrangement's RetinaFace and ParseNet
        "SadTalker_V0.0.2_512.safetensors", "mapping_00109-model.pth.tar", GFP,
        "detection_Resnet50_Final.pth", "parsing_parsenet.pth",
    }  # fmt: skip
    assert w.required_files(256, "full", background=True).names(man) == [
        "SadTalker_V0.0.2_256.safetensors", "mapping_00109-model.pth.tar", "RealESRGAN_x2plus.pth",
    ]  # fmt: skip
    assert set(w.Selection(sizes=(), detector=True).names(man)) == {
        MAP229, "detection_Resnet50_Final.pth", "alignment_WFLW_4HG.pth"
    }  # fmt: skip
    dirs = _dirs(tmp_path)
    msg = w.missing_message(full, dirs, manifest=man)
    assert msg is not None
    for name in full.names(man):
        assert name in msg
    assert "python -m sadtalker_ext.download --size 512 --full --enhancer --checkpoint_dir" in msg
    assert "--background" in w.download_command(w.required_files(256, background=True))
    assert ST256 not in msg and MAP229 not in msg
    assert w.required_files(256, "extcrop").names(man) == [ST256, MAP229]


# ----------------------------------------------------------------------------------------------- failures


def _closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_cli(args: list[str], hf_endpoint: str = "http://127.0.0.1:9"):
    """``python -m sadtalker_ext.download`` as a user runs it (no proxy for loopback)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["no_proxy"] = "127.0.0.1,localhost"
    env["HF_ENDPOINT"] = hf_endpoint
    return subprocess.run(
        [sys.executable, "-m", "sadtalker_ext.download", "--no-tqdm", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_cli_refuses_a_mirror_that_is_not_a_url(site, small, tmp_path):
    man = _manifest(tmp_path, [_entry(ST256, small[ST256], [f"{site.base}/gh/{ST256}"])], small["keys"])
    proc = _run_cli(["--manifest", str(man.source), "--checkpoint_dir", str(tmp_path / "ck"),
                     "--gfpgan_dir", str(tmp_path / "gf"), "--mirror", "notaurl"])  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --mirror 'notaurl'") and "https://" in lines[0]
    assert site.requests == [] and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("where", ["file", "parent-file"])
def test_cli_refuses_a_checkpoint_dir_that_is_a_file(site, small, tmp_path, where):
    man = _manifest(tmp_path, [_entry(ST256, small[ST256], [f"{site.base}/gh/{ST256}"])], small["keys"])
    site.files[f"/gh/{ST256}"] = small[ST256]
    blocker = tmp_path / "ckpt.txt"
    blocker.write_text("keep me")
    ckpt = blocker if where == "file" else blocker / "sub"
    proc = _run_cli(["--manifest", str(man.source), "--checkpoint_dir", str(ckpt),
                     "--gfpgan_dir", str(tmp_path / "gf")])  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --checkpoint_dir") and "is a file" in lines[0]
    assert site.requests == [] and blocker.read_text() == "keep me"


def test_library_download_into_a_file_fails_that_file_without_raising(site, small, tmp_path):
    site.files[f"/gh/{ST256}"] = small[ST256]
    man = _manifest(tmp_path, [_entry(ST256, small[ST256], [f"{site.base}/gh/{ST256}"])], small["keys"])
    (tmp_path / "ckpt").write_text("a file")
    report = dl.download([ST256], _dirs(tmp_path), manifest=man, **FAST)
    assert report.results[0].status == "failed"
    assert "cannot create the folder" in report.results[0].detail and site.requests == []


def test_cli_refused_mirror_fails_fast_and_the_summary_names_every_source(site, small, tmp_path):
    # mirror: a closed loopback port (refused); official URL: 404; Hugging Face: 404 on the same server
    entry = _entry(ST256, small[ST256], [f"{site.base}/gh/{ST256}"])
    entry["hf"] = {"repo": "org/repo", "revision": "abc", "path": ST256}
    man = _manifest(tmp_path, [entry], small["keys"])
    mirror = f"http://127.0.0.1:{_closed_port()}/m"
    args = ["--manifest", str(man.source), "--checkpoint_dir", str(tmp_path / "ck"), "--gfpgan_dir",
            str(tmp_path / "gf"), "--mirror", mirror]  # fmt: skip
    proc = _run_cli(args, hf_endpoint=site.base)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # nothing retried: one request for each of the two 404 sources, no retry announced for the mirror
    assert site.paths_requested() == [f"/gh/{ST256}", f"/org/repo/resolve/abc/{ST256}"]
    assert "retry" not in proc.stderr
    failed = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("failed")]
    assert len(failed) == 1, proc.stdout
    line = failed[0]
    assert f"{mirror}/{ST256}: connection refused" in line
    assert f"{site.base}/gh/{ST256}: HTTP 404" in line
    assert f"{site.base}/org/repo/resolve/abc/{ST256}: HTTP 404" in line
    assert line.count(mirror) == 1 and "attempts" not in line


def test_no_network_each_source_is_looked_up_once(small, tmp_path, monkeypatch):
    lookups: list[str] = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    entries = []
    for name in (ST256, GFP):
        entry = _entry(name, small[name], [f"http://github.invalid/gh/{name}"])
        entry["hf"] = {"repo": "org/repo", "revision": "abc", "path": name}
        entries.append(entry)
    man = _manifest(tmp_path, entries, small["keys"])
    report = dl.download(
        None, _dirs(tmp_path), manifest=man, mirror="http://mirror.invalid/m", hf_endpoint="http://hf.invalid",
        backoff=0.0, timeout=10.0, retries=4,
    )  # fmt: skip
    assert lookups == ["mirror.invalid", "github.invalid", "hf.invalid"] * 2
    for res in report.results:
        assert res.status == "failed"
        assert res.detail.count("host not found") == 3 and "attempts" not in res.detail, res.detail
        for host in ("mirror.invalid", "github.invalid", "hf.invalid"):
            assert res.detail.count(host) == 1, res.detail
    assert len(report.summary().splitlines()) == 2  # one line per file


@pytest.mark.parametrize("code", [503, 429])
def test_transient_http_errors_are_retried_then_reported_once(site, small, tmp_path, code):
    site.errors[f"/gh/{GFP}"] = code
    man = _manifest(tmp_path, [_entry(GFP, small[GFP], [f"{site.base}/gh/{GFP}"])], small["keys"])
    report = dl.download([GFP], _dirs(tmp_path), manifest=man, backoff=0.0, timeout=10.0, retries=2)
    assert len(site.requests) == 3  # 1 + 2 retries
    res = report.results[0]
    assert res.status == "failed" and res.detail.count(f"/gh/{GFP}") == 1
    assert f"HTTP {code}" in res.detail and "(3 attempts)" in res.detail, res.detail


@pytest.mark.parametrize("code", [401, 403, 418])
def test_client_errors_are_not_retried(site, small, tmp_path, code):
    site.errors[f"/gh/{GFP}"] = code
    man = _manifest(tmp_path, [_entry(GFP, small[GFP], [f"{site.base}/gh/{GFP}"])], small["keys"])
    report = dl.download([GFP], _dirs(tmp_path), manifest=man, backoff=0.0, timeout=10.0, retries=3)
    assert len(site.requests) == 1 and report.results[0].status == "failed"


def test_library_mirror_that_is_not_a_url_fails_that_source_only(site, small, tmp_path):
    site.files[f"/gh/{GFP}"] = small[GFP]
    man = _manifest(tmp_path, [_entry(GFP, small[GFP], [f"{site.base}/gh/{GFP}"])], small["keys"])
    report = dl.download([GFP], _dirs(tmp_path), manifest=man, mirror="notaurl", **FAST)
    assert report.ok, report.summary()  # the official URL after the unusable mirror
    site.files.clear()
    report = dl.download([GFP], _dirs(tmp_path / "c"), manifest=man, mirror="notaurl", **FAST)
    assert report.results[0].status == "failed"
    assert "notaurl/" in report.results[0].detail and "not a usable URL" in report.results[0].detail
