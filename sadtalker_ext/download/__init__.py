"""Model manager: download and verify the official SadTalker weights.

Library use (the WebUI tab's button)::

    from sadtalker_ext.download import download
    from sadtalker_ext.weights import Selection
    report = download(Selection(sizes=(256, 512), full=True), dirs, progress=callback)

Command line::

    python -m sadtalker_ext.download --size all --full --enhancer
    python -m sadtalker_ext.download --dry-run          # list what is missing
    python -m sadtalker_ext.download --mirror https://my.mirror/sadtalker   # <mirror>/<file name>

Each file goes to ``<folder>/<name>.part`` first (resumed with an HTTP Range request after a cut
connection or an earlier interrupted run), is verified (size, sha256 when known, safetensors header or
mapping tensors against ``models/sadtalker_v002_keys.json``) and only then renamed to its final name.
Sources are tried in order: ``--mirror``, the official GitHub release, the authors' Hugging Face
repository (``HF_ENDPOINT`` honoured). A source that cannot serve the file and would not on a retry (host not
found, connection refused, HTTP 4xx, not a URL) is left at once; timeouts, server errors (5xx, 408, 429) and
connections cut mid-transfer are retried with growing pauses. A failed file's report names every source tried
and why it failed, on one line. Proxies come from the environment (``http_proxy`` / ``https_proxy`` /
``no_proxy``), as urllib reads them.
"""

from __future__ import annotations

import errno
import http.client
import logging
import re
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import CancelledError
from ..paths import ModelDirs, resolve_model_dirs
from ..weights import (
    CORRUPT,
    PRESENT,
    Manifest,
    Selection,
    WeightFile,
    check_file,
    load_manifest,
    resolve_selection,
)

log = logging.getLogger(__name__)

USER_AGENT = f"sadtalker-ext-downloader/{__version__}"
CHUNK = 1 << 20
DISK_MARGIN = 16 << 20
_TRANSIENT_HTTP = {408, 425, 429}
"""4xx answers worth a retry (timeout, too early, too many requests); every other 4xx fails the source at once."""
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}

# Statuses of a FileResult.
DOWNLOADED = "downloaded"
REPLACED = "replaced"
FAILED = "failed"
WOULD_DOWNLOAD = "would-download"


@dataclass(frozen=True)
class Progress:
    """One progress report.

    ``phase``: check, download, retry, verify, done, present, corrupt, failed. ``done``/``total`` in bytes
    (``total`` 0 when unknown), ``speed`` in bytes/s over the current transfer, ``eta`` in seconds (None
    when unknown). ``index`` is 1-based among ``count`` files.
    """

    name: str
    index: int
    count: int
    phase: str
    done: int = 0
    total: int = 0
    speed: float = 0.0
    eta: float | None = None
    message: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass
class FileResult:
    """What happened to one file. ``status``: present, downloaded, replaced, corrupt, failed, would-download."""

    name: str
    path: Path
    status: str
    detail: str = ""
    source: str = ""
    fetched_bytes: int = 0
    size: int = 0


@dataclass
class DownloadReport:
    """Per-file results of :func:`download`, in manifest order."""

    results: list[FileResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """True when every selected file is now present and verified (dry run: nothing missing)."""
        return all(r.status in (PRESENT, DOWNLOADED, REPLACED) for r in self.results)

    def by_status(self, *statuses: str) -> list[FileResult]:
        return [r for r in self.results if r.status in statuses]

    def summary(self) -> str:
        """One line per file: status, name, destination and (when there is one) why, e.g. every source
        tried and what each answered for a failed file."""
        lines = []
        for r in self.results:
            line = f"{r.status:>14}  {r.name}  -> {r.path}"
            if r.detail:
                line += f"  ({r.detail})"
            lines.append(line)
        return "\n".join(lines)


class _NotThere(Exception):
    """The source cannot give the file and retrying will not change that (HTTP 4xx, host not found,
    connection refused, invalid URL, certificate refused): try the next source at once."""


class _BadContent(Exception):
    """The source serves something else (wrong size): try the next source."""


class _Transient(Exception):
    """Timeout, server error (5xx) or a connection cut mid-transfer: retry the same source after a pause."""


class _LocalFailure(Exception):
    """Writing the file failed here (disk full, permissions): stop trying this file."""


class _Reporter:
    """Throttles progress callbacks (at most every ``interval`` s, always on phase changes)."""

    def __init__(self, callback: ProgressCallback | None, count: int, interval: float = 0.2):
        self.callback = callback
        self.count = count
        self.interval = interval
        self._last = 0.0

    def emit(self, name: str, index: int, phase: str, *, force: bool = True, **kw) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self.callback(Progress(name=name, index=index, count=self.count, phase=phase, **kw))


def _parse_content_range(value: str | None) -> tuple[int, int] | None:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or 0)."""
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    if not m:
        return None
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else 0)


def _raise_connect_error(exc: BaseException) -> None:
    """Raise _NotThere for connection errors that retrying cannot fix, else _Transient."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        raise _NotThere(f"host not found (DNS: {reason.strerror or reason})") from exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        raise _NotThere(f"TLS certificate refused: {reason.verify_message or reason}") from exc
    if isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS:
        what = "connection refused" if reason.errno == errno.ECONNREFUSED else "unreachable"
        raise _NotThere(f"{what} ({reason.strerror or reason})") from exc
    if isinstance(reason, str):  # urllib's own complaints about the URL, e.g. "no host given"
        raise _NotThere(reason) from exc
    if isinstance(reason, TimeoutError):
        raise _Transient("timed out") from exc
    raise _Transient(f"cannot connect: {reason}") from exc


def _fetch_into(
    url: str,
    part: Path,
    expected: int,
    *,
    opener: urllib.request.OpenerDirector,
    timeout: float,
    on_bytes: Callable[[int, int, int], None],
    cancel: Callable[[], bool] | None,
) -> int:
    """Append the rest of ``url`` to ``part`` (Range from its current size); returns bytes received.

    Raises _NotThere, _BadContent or _Transient; a server that ignores Range restarts the file.
    """
    offset = part.stat().st_size if part.is_file() else 0
    if expected and offset > expected:
        part.unlink()
        offset = 0
    if expected and offset == expected:
        return 0  # complete from an earlier run; verification decides
    try:
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        if offset:
            req.add_header("Range", f"bytes={offset}-")
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            span = re.match(r"\s*bytes\s+\*/(\d+)", exc.headers.get("Content-Range") or "")
            remote = int(span.group(1)) if span else 0
            if remote and expected and remote != expected:
                raise _BadContent(
                    f"the server's file has {remote} bytes, the official file has {expected}"
                ) from exc
            if remote and remote == offset:
                return 0  # the part file is already complete; verification decides
            part.unlink()
            raise _Transient(f"HTTP 416 for a resume at byte {offset}; restarting the file") from exc
        if 400 <= exc.code < 500 and exc.code not in _TRANSIENT_HTTP:
            raise _NotThere(f"HTTP {exc.code} {exc.reason}") from exc
        raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
    except ValueError as exc:  # urllib: "unknown url type", a URL without a host, ...
        raise _NotThere(f"not a usable URL ({exc})") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        _raise_connect_error(exc)
    received = 0
    with resp:
        if offset and resp.status == 206:
            span = _parse_content_range(resp.headers.get("Content-Range"))
            if span is None or span[0] != offset:
                part.unlink()
                raise _Transient(
                    f"server answered the resume with range {resp.headers.get('Content-Range')!r}"
                )
            mode = "ab"
            total = span[1] or (offset + int(resp.headers.get("Content-Length") or 0))
        else:
            offset, mode = 0, "wb"
            length = int(resp.headers.get("Content-Length") or 0)
            total = length
        if expected and total and total != expected:
            raise _BadContent(f"the server offers {total} bytes, the official file has {expected}")
        total = total or expected
        with part.open(mode) as fh:
            while True:
                if cancel is not None and cancel():
                    raise CancelledError(f"download of {part.name[: -len('.part')]} cancelled")
                try:
                    block = resp.read(CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    raise _Transient(f"connection lost after {offset + received} bytes: {exc!r}") from exc
                if not block:
                    break
                try:
                    fh.write(block)
                except OSError as exc:
                    raise _LocalFailure(f"cannot write {part}: {exc}") from exc
                received += len(block)
                on_bytes(offset + received, total, received)
                if expected and offset + received > expected:
                    raise _BadContent(f"the server sends more than the official {expected} bytes")
    if total and offset + received < total:
        raise _Transient(f"connection closed after {offset + received} of {total} bytes")
    return received


def build_opener() -> urllib.request.OpenerDirector:
    """urllib opener: proxies from the environment (``http_proxy``/``https_proxy``/``no_proxy``), system CA
    certificates plus certifi's bundle when installed (python.org macOS builds lack system roots)."""
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    except (ImportError, OSError, ssl.SSLError):
        pass
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


class _Tried:
    """Every source tried for one file, in order, with its last failure and how many attempts it got."""

    def __init__(self) -> None:
        self._why: dict[str, str] = {}
        self._attempts: dict[str, int] = {}

    def add(self, url: str, why: str) -> None:
        self._why[url] = why
        self._attempts[url] = self._attempts.get(url, 0) + 1

    def text(self, first: str = "") -> str:
        """One line: ``first`` (a local problem), then ``tried URL: why[ (N attempts)], ...``."""
        parts = []
        for url, why in self._why.items():
            n = self._attempts[url]
            parts.append(f"{url}: {why}" + (f" ({n} attempts)" if n > 1 else ""))
        tried = ("tried " + "; ".join(parts)) if parts else ""
        return "; ".join(p for p in (first, tried) if p)


def _download_file(
    wf: WeightFile,
    dest: Path,
    manifest: Manifest,
    *,
    index: int,
    reporter: _Reporter,
    mirror: str | None,
    hf_endpoint: str | None,
    retries: int,
    backoff: float,
    timeout: float,
    opener: urllib.request.OpenerDirector,
    cancel: Callable[[], bool] | None,
) -> tuple[bool, str, str, int]:
    """Fetch ``wf`` to ``dest`` through ``dest.part``. Returns (ok, detail, source url, bytes fetched).

    On failure ``detail`` is one line naming every source tried and why it failed."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return False, f"cannot create the folder {dest.parent}: {exc.strerror or exc}", "", 0
    part = dest.with_name(dest.name + ".part")
    tried = _Tried()
    fetched = 0
    sources = wf.sources(mirror, hf_endpoint)
    if not sources:
        return False, "the manifest lists no download URL for this file", "", 0
    for url in sources:
        attempt = 0
        # bytes already in the .part (earlier run or source) when this source starts: if the result then
        # fails verification, the old bytes may be the culprit, so this source gets one clean restart
        inherited = part.stat().st_size if part.is_file() else 0
        while True:
            have = part.stat().st_size if part.is_file() else 0
            free = _free_bytes(dest.parent)
            if wf.size and free is not None and free < wf.size - have + DISK_MARGIN:
                msg = f"not enough disk space in {dest.parent}: {free} bytes free, {wf.size - have} needed"
                return False, tried.text(msg), url, fetched
            started = time.monotonic()
            attempt_bytes = [0]

            def on_bytes(
                done: int, total: int, new: int, _t0: float = started, _seen=attempt_bytes, _url: str = url
            ) -> None:
                _seen[0] = new
                elapsed = max(time.monotonic() - _t0, 1e-6)
                speed = new / elapsed
                eta = (total - done) / speed if total and speed > 0 else None
                reporter.emit(
                    wf.name,
                    index,
                    "download",
                    force=False,
                    done=done,
                    total=total,
                    speed=speed,
                    eta=eta,
                    message=_url,
                )

            reporter.emit(wf.name, index, "download", done=have, total=wf.size, message=url)
            try:
                _fetch_into(
                    url, part, wf.size, opener=opener, timeout=timeout, on_bytes=on_bytes, cancel=cancel
                )
            except _LocalFailure as exc:
                return False, tried.text(str(exc)), url, fetched + attempt_bytes[0]
            except _NotThere as exc:
                fetched += attempt_bytes[0]
                tried.add(url, str(exc))
                log.info("%s: %s: %s", wf.name, url, exc)
                break
            except _BadContent as exc:
                fetched += attempt_bytes[0]
                tried.add(url, str(exc))
                log.warning("%s: %s: %s", wf.name, url, exc)
                part.unlink(missing_ok=True)
                break
            except _Transient as exc:
                fetched += attempt_bytes[0]
                attempt += 1
                tried.add(url, str(exc))
                log.warning("%s: %s: %s (attempt %d of %d)", wf.name, url, exc, attempt, retries + 1)
                if attempt > retries:
                    break
                pause = min(backoff * 2 ** (attempt - 1), 30.0)
                reporter.emit(wf.name, index, "retry", message=f"{exc}; retrying in {pause:.1f} s")
                if pause > 0:
                    time.sleep(pause)
                continue
            fetched += attempt_bytes[0]
            reporter.emit(wf.name, index, "verify", done=part.stat().st_size, total=wf.size)
            state, detail = check_file(wf, part, manifest, verify_hash=True)
            if state == PRESENT:
                try:
                    part.replace(dest)
                except OSError as exc:  # e.g. Windows: the old file is open in another program
                    msg = f"verified, but cannot rename {part.name} to {dest}: {exc}; close what uses it and re-run"
                    return False, msg, url, fetched
                return True, detail, url, fetched
            tried.add(url, f"the downloaded file failed verification: {detail}")
            log.warning("%s from %s failed verification: %s", wf.name, url, detail)
            part.unlink(missing_ok=True)
            if inherited:
                inherited = 0
                continue  # the resumed prefix may be what was wrong: fetch this source once from byte 0
            break
    return False, tried.text(), "", fetched


def download(
    selection: Selection | Iterable[str] | None,
    dirs: ModelDirs | None = None,
    progress: ProgressCallback | None = None,
    mirror: str | None = None,
    replace_corrupt: bool = False,
    *,
    dry_run: bool = False,
    verify_existing: bool = False,
    manifest: Manifest | None = None,
    hf_endpoint: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    cancel: Callable[[], bool] | None = None,
) -> DownloadReport:
    """Make the selected weight files present and verified; returns a per-file report (never raises on
    network or verification failure, only on cancel -> :class:`CancelledError`).

    ``selection``: a :class:`Selection`, explicit file names, or None for every file. ``dirs``: target
    folders (default :func:`resolve_model_dirs`). Existing files are checked (size and header; sha256 too
    when ``verify_existing``) and kept; a corrupt one is reported and only replaced when
    ``replace_corrupt``. ``retries``: extra attempts per source on transient trouble (timeouts, 5xx, 408/429,
    cut connections), pausing ``backoff * 2**k`` s (at most 30 s). ``dry_run``: only check, no network.
    """
    manifest = manifest or load_manifest()
    dirs = dirs or resolve_model_dirs()
    names = resolve_selection(selection, manifest)
    reporter = _Reporter(progress, len(names))
    opener = build_opener()
    report = DownloadReport(dry_run=dry_run)
    for index, name in enumerate(names, start=1):
        wf = manifest.get(name)
        dest = wf.path(dirs)
        reporter.emit(name, index, "check", total=wf.size)
        state, detail = check_file(wf, dest, manifest, verify_hash=verify_existing)
        if state == PRESENT:
            report.results.append(FileResult(name, dest, PRESENT, detail, size=dest.stat().st_size))
            reporter.emit(name, index, PRESENT, done=wf.size, total=wf.size, message=detail)
            continue
        if state == CORRUPT and not replace_corrupt:
            msg = f"{detail}; not replaced (use --replace-corrupt / replace_corrupt=True)"
            report.results.append(FileResult(name, dest, CORRUPT, msg, size=dest.stat().st_size))
            reporter.emit(name, index, CORRUPT, message=msg)
            continue
        if dry_run:
            sources = wf.sources(mirror, hf_endpoint)
            status = CORRUPT if state == CORRUPT else WOULD_DOWNLOAD
            report.results.append(
                FileResult(name, dest, status, detail, source=sources[0] if sources else "", size=wf.size)
            )
            continue
        ok, info, source, fetched = _download_file(
            wf, dest, manifest, index=index, reporter=reporter, mirror=mirror, hf_endpoint=hf_endpoint,
            retries=retries, backoff=backoff, timeout=timeout, opener=opener, cancel=cancel,
        )  # fmt: skip
        if ok:
            status = REPLACED if state == CORRUPT else DOWNLOADED
            report.results.append(FileResult(name, dest, status, info, source, fetched, dest.stat().st_size))
            reporter.emit(name, index, "done", done=wf.size, total=wf.size, message=source)
        else:
            report.results.append(FileResult(name, dest, FAILED, info, source, fetched))
            reporter.emit(name, index, FAILED, message=info)
    return report
