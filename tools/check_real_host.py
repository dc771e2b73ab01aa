"""Acceptance check of this extension inside a REAL WebUI checkout: AUTOMATIC1111, Forge or SD.Next, told
apart by their files (not part of CI).

Given ``--webui DIR`` (a WebUI work tree, for A1111 with its ``repositories/``) and ``--python HOST_PY`` (the
WebUI's venv interpreter), it:

1. copies this repository's files into ``DIR/extensions/<--name>`` (default ``My SadTalker.v2``: spaces and
   dots on purpose);
2. snapshots ``pip freeze --all`` of the host interpreter, runs ``install.py`` the way
   ``launch_utils.run_extension_installer`` does (host interpreter, cwd = WebUI root, ``PYTHONPATH`` = WebUI
   root; SD.Next: cwd = the extension folder), and snapshots again: the two must be identical;
3. writes stand-in checkpoints (``tests/standin.py``, reduced-width renderer) unless ``--checkpoints`` is
   given, and starts ``launch.py`` CPU-only with ``--api``, the ``--sadtalker-*`` folder flags and a
   private settings file (face detector ``dlib``; SD.Next: ``--config``, the ``Standard`` theme, and
   ``--skip-requirements --skip-torch --experimental`` so that it starts offline but still runs extension
   installers);
4. checks ``GET /sadtalker/v1/version`` and ``/models``, ``POST /sadtalker/v1/generate`` (a two-frame idle
   video), and in headless Chromium the "SadTalker" tab and a Generate click that must end with a video;
5. stops the host, compares ``pip freeze`` once more, removes the copy (unless ``--keep``) and prints a
   pass/fail table. Exit status 0 only when every check passed.

Run it with this repository's ``.venv`` (selenium, numpy, torch for the stand-ins)::

    .venv/bin/python -m tools.check_real_host --webui /path/to/stable-diffusion-webui \
        --python /path/to/stable-diffusion-webui/venv/bin/python
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_MEDIA = REPO.parent / "shared" / "media"
DEFAULT_NAME = "My SadTalker.v2"
SDNEXT_DEFAULT_NAME = "My_SadTalker.v2"
"""SD.Next runs ``install.py`` through an unquoted shell command: a folder name with a space breaks it."""
HOST_FLAGS = {
    "a1111": (
        "--skip-torch-cuda-test", "--skip-version-check", "--use-cpu", "all", "--no-half",
        "--precision", "full", "--no-download-sd-model", "--api",
    ),
    "sdnext": (
        "--use-cpu", "all", "--no-half", "--precision", "full", "--api", "--skip-requirements",
        "--skip-torch", "--experimental", "--debug",
    ),
}  # fmt: skip
HOST_NAMES = {"a1111": "AUTOMATIC1111 WebUI", "forge": "WebUI Forge", "sdnext": "SD.Next"}


def detect_host(webui: Path) -> str:
    """``"sdnext"``, ``"forge"`` or ``"a1111"`` from the checkout's files."""
    if (webui / "installer.py").is_file() and (webui / "modules" / "detailer").is_dir():
        return "sdnext"
    if (webui / "modules_forge").is_dir():
        return "forge"
    return "a1111"


CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)  # fmt: skip


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        return bool(ok)

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks) if self.checks else 10
        lines = [f"{'check'.ljust(width)}  result  detail", f"{'-' * width}  ------  ------"]
        for c in self.checks:
            detail = " ".join(c.detail.split())
            lines.append(f"{c.name.ljust(width)}  {'PASS' if c.ok else 'FAIL':6}  {detail[:160]}")
        passed = sum(c.ok for c in self.checks)
        lines.append(f"{passed} passed, {len(self.checks) - passed} failed")
        return "\n".join(lines)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


# --- extension copy, install.py, pip freeze -------------------------------------------------------------


def extension_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of this repository (what a clone or a copy would hold)."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    return sorted({p for p in out.decode().split("\0") if p and (REPO / p).is_file()})


def install_copy(target: Path) -> int:
    if target.exists():
        raise SystemExit(f"{target} already exists; remove it or pass another --name")
    files = extension_files()
    for rel in files:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    return len(files)


def pip_freeze(python: str) -> list[str]:
    out = subprocess.run(
        [python, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(line for line in out.splitlines() if line.strip())


def _versions(freeze: list[str]) -> dict[str, str]:
    out = {}
    for line in freeze:
        name, sep, version = line.partition("==")
        if not sep:  # "name @ url" and editable lines
            name, _, version = line.partition(" @ ")
        out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def freeze_diff(before: list[str], after: list[str]) -> tuple[list[str], list[str]]:
    """(changed or removed distributions, added distributions) between two ``pip freeze`` listings."""
    old, new = _versions(before), _versions(after)
    changed = [f"{n} {v} -> {new.get(n, '(removed)')}" for n, v in sorted(old.items()) if new.get(n) != v]
    added = [f"{n}=={v}" for n, v in sorted(new.items()) if n not in old]
    return changed, added


def run_installer_like_host(
    python: str, webui: Path, ext_dir: Path, kind: str
) -> subprocess.CompletedProcess:
    """What the host's extension installer does: host python, PYTHONPATH=webui root, cwd the webui root
    (A1111 ``launch_utils.run_extension_installer``, Forge) or the extension folder (SD.Next ``installer.py``)."""
    env = os.environ.copy()
    env["PYTHONPATH"] = f"{webui}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run(
        [python, str(ext_dir / "install.py")],
        cwd=str(ext_dir if kind == "sdnext" else webui),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


# --- stand-in weights -----------------------------------------------------------------------------------


def build_standins(folder: Path) -> Path:
    """Reduced-width stand-in checkpoints in the official formats (tests/standin.py, shared/parity/fill.py)."""
    from tests import standin

    return standin.write_reduced_checkpoints(folder, seed=0, motion=standin.motion_tensors(0))


def host_has_modules(python: str, *modules: str) -> list[str]:
    code = "import importlib.util,sys;print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    out = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, check=True)
    return out.stdout.split()


# --- host process ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Host:
    def __init__(self, python: str, webui: Path, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = os.environ.copy()
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [python, "launch.py", *args],
            cwd=str(webui),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, base: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                # Our routes are added by app_started, after the UI is built: a 404 means "not yet"
                # (Forge serves other routes earlier); if they never come, the wait times out.
                status, _ = http("GET", f"{base}/sadtalker/v1/version", timeout=5)
                if status == 200:
                    status_ui, _ = http("GET", base + "/", timeout=10)
                    if status_ui == 200:
                        return True
            time.sleep(2)
        return False

    def text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        self.log.close()


# --- browser --------------------------------------------------------------------------------------------


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise RuntimeError("chromium / chromedriver not found (apt-get install -y chromium chromium-driver)")
    options.binary_location = chromium
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_page_load_timeout(120)
    return drv


TAB_BUTTONS = "#tabs > .tab-nav button, #tabs > div > .tab-nav button"


def check_tab_in_browser(report: Report, base: str, picture: Path, work: Path, timeout: float) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    drv = browser(work / "chromium-profile")
    step = "open the page"
    try:
        drv.get(base + "/")
        wait = WebDriverWait(drv, 120)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, TAB_BUTTONS)))
        names = [b.text.strip() for b in drv.find_elements(By.CSS_SELECTOR, TAB_BUTTONS)]
        has_tab = report.add("tab: 'SadTalker' in the WebUI tab bar", "SadTalker" in names, ", ".join(names))
        errors = [e.text for e in drv.find_elements(By.CSS_SELECTOR, "#sadtalker_error")]
        real = drv.find_elements(By.ID, "sadtalker_generate")
        report.add(
            "tab: the real SadTalker tab (Generate button, no error tab)",
            has_tab and bool(real) and not errors,
            errors[0][:300] if errors else ("real tab" if real else "no #sadtalker_generate in the page"),
        )
        notes = [
            e.get_attribute("textContent") or "" for e in drv.find_elements(By.ID, "sadtalker_host_notes")
        ]
        if notes:
            report.add("tab: host notes shown", True, " | ".join(n.strip() for n in notes)[:300])
        scripts = [
            s.get_attribute("src") or ""
            for s in drv.find_elements(By.CSS_SELECTOR, "head script[src]")
            if "sadtalker.js" in (s.get_attribute("src") or "")
        ]
        report.add(
            "page: our javascript/ is served", bool(scripts), scripts[0] if scripts else "not in <head>"
        )
        if not has_tab:
            return
        button = next(
            b for b in drv.find_elements(By.CSS_SELECTOR, TAB_BUTTONS) if b.text.strip() == "SadTalker"
        )
        step = "open the tab"
        button.click()
        wait.until(ec.visibility_of_element_located((By.ID, "sadtalker_generate")))
        step = "upload the picture"
        upload = drv.find_element(By.CSS_SELECTOR, "#sadtalker_picture input[type=file]")
        drv.execute_script("arguments[0].style.display = 'block';", upload)  # gradio hides the file input
        upload.send_keys(str(picture))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#sadtalker_picture img")))
        step = "idle mode and length"
        drv.find_element(By.CSS_SELECTOR, "#sadtalker_idle_mode input[type=checkbox]").click()
        seconds = drv.find_element(By.CSS_SELECTOR, "#sadtalker_idle_seconds input")
        seconds.clear()
        seconds.send_keys("0.08")
        step = "Generate"
        drv.find_element(By.ID, "sadtalker_generate").click()
        start = time.monotonic()
        video_src, log_text = "", ""
        while time.monotonic() - start < timeout:
            videos = drv.find_elements(By.CSS_SELECTOR, "#sadtalker_video video")
            video_src = videos[0].get_attribute("src") if videos else ""
            log_text = drv.find_element(By.ID, "sadtalker_html_log").text
            if video_src or "error" in log_text.lower():
                break
            time.sleep(1)
        info = drv.find_element(By.CSS_SELECTOR, "#sadtalker_infotext textarea").get_attribute("value")
        elapsed = time.monotonic() - start
        report.add(
            "tab: Generate click gives a video",
            bool(video_src) and "Frames: 2" in (info or ""),
            f"{elapsed:.0f}s src={video_src[:120]} infotext={info!r:.160} log={log_text!r:.200}",
        )
        if video_src:
            status, data = http("GET", video_src, timeout=60)
            report.add(
                "tab: the video is served",
                status == 200 and data[4:8] == b"ftyp",
                f"HTTP {status}, {len(data)} B",
            )
        step = "send-to from the extras tab"
        check_send_to(report, drv, picture)
    except Exception as exc:
        report.add(
            f"browser: {step}", False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        drv.save_screenshot(str(work / "failure.png"))
    finally:
        drv.quit()


def check_send_to(report: Report, drv, picture: Path) -> None:
    """Extras (A1111, Forge) / Process (SD.Next): upload the picture, run it, press our 🎤 button under the
    result gallery; the picture must arrive in the SadTalker tab, which must be selected."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(drv, 300)
    drv.get(drv.current_url)  # a fresh page: the SadTalker picture input is empty again
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, TAB_BUTTONS)))
    tab = next(
        b for b in drv.find_elements(By.CSS_SELECTOR, TAB_BUTTONS) if b.text.strip() in ("Extras", "Process")
    )
    tab.click()
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#extras_image input[type=file]")))
    drv.execute_script("arguments[0].style.display = 'block';", upload)
    upload.send_keys(str(picture))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#extras_image img")))
    drv.find_element(By.ID, "extras_generate").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#extras_gallery img")))
    buttons = drv.find_elements(By.ID, "extras_send_to_sadtalker")
    if not report.add("send-to: our button under the extras result", bool(buttons), f"{len(buttons)} found"):
        return
    drv.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", buttons[0])
    try:
        WebDriverWait(drv, 60).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, "#sadtalker_picture img"))
        )
        arrived = True
    except Exception:
        arrived = False
    selected = [
        b.text.strip()
        for b in drv.find_elements(By.CSS_SELECTOR, TAB_BUTTONS)
        if "selected" in (b.get_attribute("class") or "")
    ]
    report.add(
        "send-to: the picture arrives in the SadTalker tab",
        arrived and "SadTalker" in selected,
        f"picture {'shown' if arrived else 'missing'}; selected tab {selected}",
    )


# --- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--webui", required=True, type=Path, help="the WebUI root (holds launch.py)")
    p.add_argument("--python", required=True, help="the WebUI's venv python")
    p.add_argument(
        "--name",
        help=f"extension folder name (default {DEFAULT_NAME!r}; SD.Next {SDNEXT_DEFAULT_NAME!r}, no spaces)",
    )
    p.add_argument("--port", type=int, default=0, help="WebUI port (default: a free one)")
    p.add_argument("--checkpoints", type=Path, help="checkpoint folder (default: build stand-ins)")
    p.add_argument("--gfpgan-dir", type=Path, help="face model folder (default: an empty one; dlib is used)")
    p.add_argument("--picture", type=Path, default=SHARED_MEDIA / "people_0.png", help="face picture")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--skip-prepare-environment", action="store_true", help="pass it to launch.py")
    p.add_argument(
        "--host-arg",
        action="append",
        default=[],
        help="extra launch.py flag, repeatable (Forge on a CPU-only machine: --host-arg=--always-cpu)",
    )
    p.add_argument("--no-browser", action="store_true", help="skip the Chromium checks")
    p.add_argument("--start-timeout", type=float, default=600)
    p.add_argument("--generate-timeout", type=float, default=900)
    p.add_argument("--keep", action="store_true", help="leave the extension copy in extensions/")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    webui = args.webui.resolve()
    if not (webui / "launch.py").is_file():
        raise SystemExit(f"{webui} has no launch.py")
    kind = detect_host(webui)
    print(f"host: {HOST_NAMES[kind]} at {webui}", flush=True)
    report = Report()
    work = args.work or Path(tempfile.mkdtemp(prefix="sadtalker_real_host_"))
    work.mkdir(parents=True, exist_ok=True)
    name = args.name or (SDNEXT_DEFAULT_NAME if kind == "sdnext" else DEFAULT_NAME)
    ext_dir = webui / "extensions" / name
    host: Host | None = None
    try:
        count = install_copy(ext_dir)
        report.add("install: copy into extensions/", True, f"{count} files -> {ext_dir}")

        before = pip_freeze(args.python)
        res = run_installer_like_host(args.python, webui, ext_dir, kind)
        (work / "install.log").write_text(res.stdout + res.stderr)
        after = pip_freeze(args.python)
        said = [line for line in res.stdout.splitlines() if line.startswith("[SadTalker]")]
        report.add(
            "install.py: exit 0 like the host runs it",
            res.returncode == 0,
            " | ".join(said) or "nothing to do",
        )
        changed, added = freeze_diff(before, after)
        report.add(
            "install.py: no installed version changed",
            not changed,
            " ".join(changed) or f"{len(before)} kept; added: {' '.join(added) or 'nothing'}",
        )

        missing = host_has_modules(args.python, "dlib", "face_recognition_models")
        report.add("host venv: dlib + face_recognition_models", not missing, " ".join(missing) or "present")

        ckpt = args.checkpoints or build_standins(work / "checkpoints")
        gfpgan = args.gfpgan_dir or work / "gfpgan"
        gfpgan.mkdir(parents=True, exist_ok=True)
        settings_file = work / "config.json"
        settings: dict[str, object] = {"sadtalker_default_face_detector": "dlib"}
        if kind == "sdnext":
            settings["theme_type"] = "Standard"  # the modern UI theme is fetched from the network
        settings_file.write_text(json.dumps(settings))
        port = args.port or free_port()
        base = f"http://127.0.0.1:{port}"
        if kind == "sdnext":
            flags = [*HOST_FLAGS["sdnext"], "--port", str(port), "--config", str(settings_file)]
        else:
            flags = [
                *HOST_FLAGS["a1111"], "--port", str(port), "--ui-settings-file", str(settings_file),
                "--ui-config-file", str(work / "ui-config.json"),
            ]  # fmt: skip
        flags += ["--sadtalker-checkpoint-dir", str(ckpt), "--sadtalker-gfpgan-dir", str(gfpgan)]
        if args.skip_prepare_environment:
            flags.append("--skip-prepare-environment")
        flags += args.host_arg
        started = time.monotonic()
        log_start = host_log_size(webui)
        host = Host(args.python, webui, flags, work / "webui.log")
        ready = host.wait_ready(base, args.start_timeout)
        report.add(
            "host: starts and serves the UI",
            ready,
            f"{time.monotonic() - started:.0f}s, log {work / 'webui.log'}",
        )
        if not ready:
            return finish(report, host, args, ext_dir)
        # SD.Next's console wraps lines at 80 characters: read its unwrapped log file instead
        log_text = host.text() + host_log_file(webui, kind, log_start)
        bad = [
            line
            for line in log_text.splitlines()
            if ("sadtalker" in line.lower() and ("error" in line.lower() or "traceback" in line.lower()))
            or "Error running install.py" in line
            or ("Extension installer error" in line and name in line)
        ]
        report.add("host log: no SadTalker errors at start", not bad, " | ".join(bad[:3]))

        status, body = http("GET", base + "/sadtalker/v1/version")
        version = json.loads(body) if status == 200 else {}
        from sadtalker_ext import __version__

        report.add(
            "api: GET /sadtalker/v1/version",
            status == 200
            and version.get("version") == __version__
            and f"gradio=={version.get('gradio')}" in before,
            f"HTTP {status} {body[:200]!r}",
        )
        status, body = http("GET", base + "/sadtalker/v1/models")
        models = json.loads(body) if status == 200 else {}
        report.add(
            "api: GET /sadtalker/v1/models",
            status == 200 and Path(str(models.get("checkpoints"))).resolve() == Path(ckpt).resolve(),
            f"HTTP {status} {body[:200]!r}",
        )

        request = {
            "source_base64": base64.b64encode(args.picture.read_bytes()).decode(),
            "idle_seconds": 0.08,
            "face_detector": "dlib",
            "seed": 7,
            "return": "both",
        }
        started = time.monotonic()
        status, body = http("POST", base + "/sadtalker/v1/generate", request, timeout=args.generate_timeout)
        answer = json.loads(body) if body[:1] == b"{" else {}
        video = base64.b64decode(answer.get("video_base64") or "")
        path = Path(answer.get("video_path") or "/nonexistent")
        report.add(
            "api: POST /sadtalker/v1/generate",
            status == 200 and answer.get("frames") == 2 and video[4:8] == b"ftyp" and path.is_file(),
            f"HTTP {status} {time.monotonic() - started:.0f}s frames={answer.get('frames')} "
            f"path={path} {'' if status == 200 else body[:300]!r}",
        )
        if path.is_file():
            report.add(
                "api: video under the WebUI outputs folder, absolute path",
                path.is_absolute() and path.resolve().is_relative_to(webui / "outputs"),
                str(path),
            )

        if not args.no_browser:
            try:
                check_tab_in_browser(report, base, args.picture.resolve(), work, args.generate_timeout)
            except Exception as exc:  # a browser failure is a failed check, with its reason
                report.add("browser", False, f"{type(exc).__name__}: {exc}")
        return finish(report, host, args, ext_dir, before)
    finally:
        if host is not None and host.proc.poll() is None:
            host.stop()
        if not args.keep and ext_dir.exists():
            shutil.rmtree(ext_dir)


def host_log_size(webui: Path) -> int:
    log = webui / "sdnext.log"
    return log.stat().st_size if log.is_file() else 0


def host_log_file(webui: Path, kind: str, start: int) -> str:
    """What SD.Next wrote to ``sdnext.log`` (unwrapped lines) since byte ``start``; "" for the other hosts."""
    log = webui / "sdnext.log"
    if kind != "sdnext" or not log.is_file():
        return ""
    with open(log, "rb") as f:
        f.seek(start)
        return "\n" + f.read().decode(errors="replace")


def finish(report: Report, host: Host, args: argparse.Namespace, ext_dir: Path, before=None) -> int:
    host.stop()
    text = host.log_path.read_text(errors="replace")
    if before is not None:
        changed, added = freeze_diff(before, pip_freeze(args.python))
        report.add(
            "host run: no installed version changed",
            not changed,
            " ".join(changed) or f"added since the first snapshot: {' '.join(added) or 'nothing'}",
        )
    tail = "\n".join(text.splitlines()[-15:])
    print("\n--- webui log tail ---\n" + tail + "\n")
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
