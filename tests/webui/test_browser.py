"""Headless Chromium: "Send to SadTalker" under a txt2img-like gallery puts the image into the tab's
picture input and switches to the tab (gradio 3.41 page, host-like send-to wiring, our javascript/).

Needs Debian's ``chromium`` + ``chromium-driver`` and the ``selenium`` pip package. Missing ones FAIL the
test (with the install lines) instead of skipping it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.webui.conftest import REPO, sample_png

CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)  # fmt: skip
INSTALL_HINT = (
    "the browser test needs Chromium and its driver: `apt-get install -y chromium chromium-driver` "
    "and `pip install selenium`"
)
STUB = Path(__file__).resolve().parent / "browser" / "host_stub.js"


def _find(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{' / '.join(names)} not found: {INSTALL_HINT}")


@pytest.fixture
def driver(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed: {INSTALL_HINT}")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = _find("chromium", "chromium-browser")
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(_find("chromedriver")), options=options)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_page(webui, picture: Path, python_binding: bool = True):
    """What ui.create_ui() does, reduced: txt2img first (on_after_component fires for its components),
    then the on_ui_tabs tabs, all inside ``#tabs``, then connect_paste_params_buttons().
    ``python_binding=False``: a host whose button row never reaches our on_after_component hook."""
    import gradio as gr

    cb, pc = webui.callbacks, webui.paste
    # Forge's output gallery is type="pil" (its image_from_url_text then gets (PIL image, caption));
    # gradio 3.41's Gallery has no type parameter
    gallery_kw = {"type": "pil"} if int(gr.__version__.split(".")[0]) >= 4 else {}
    with gr.Blocks(analytics_enabled=False) as txt2img:
        gallery = gr.Gallery(value=[str(picture)], label="Output", elem_id="txt2img_gallery", **gallery_kw)
        cb.after_component_callback(gallery, elem_id="txt2img_gallery")
        with gr.Row(elem_id="image_buttons_txt2img"):
            for target in ("img2img", "inpaint", "extras"):
                button = gr.Button(target, elem_id=f"txt2img_send_to_{target}")
                if python_binding:
                    cb.after_component_callback(button, elem_id=f"txt2img_send_to_{target}")
    interfaces = [(txt2img, "txt2img", "txt2img"), *cb.ui_tabs_callback()]
    with gr.Blocks(analytics_enabled=False) as demo:
        with gr.Tabs(elem_id="tabs"):
            for interface, label, ifid in interfaces:
                with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                    interface.render()
        pc.connect_paste_params_buttons()
    return demo


def _inject_assets(monkeypatch):
    """The host's reload_javascript(): scripts into <head>, style.css before </body>."""
    import gradio as gr
    import gradio.routes

    gradio4 = "true" if int(gr.__version__.split(".")[0]) >= 4 else "false"
    js = f"<script>window.SADTALKER_TEST_GRADIO4 = {gradio4};</script>" + "".join(
        f"<script type='text/javascript'>{p.read_text()}</script>"
        for p in (STUB, *sorted((REPO / "javascript").glob("*.js")))  # the host loads every file there
    )
    css = f"<style>{(REPO / 'style.css').read_text()}</style>"
    original = gradio.routes.templates.TemplateResponse

    def template_response(*args, **kwargs):
        res = original(*args, **kwargs)
        res.body = res.body.replace(b"</head>", f"{js}</head>".encode()).replace(
            b"</body>", f"{css}</body>".encode()
        )
        res.init_headers()
        return res

    monkeypatch.setattr(gradio.routes.templates, "TemplateResponse", template_response)


@contextlib.contextmanager
def _served(webui, make_extension, monkeypatch, picture: Path, python_binding: bool = True):
    """The extension registered, its assets injected and the host page with ``picture`` in the txt2img
    gallery served on a free local port; yields the page URL, closes the server afterwards."""
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    make_extension()
    _inject_assets(monkeypatch)
    demo = _host_page(webui, picture, python_binding=python_binding)
    port = _free_port()
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def _wait(predicate, timeout=30.0, what="condition", driver=None):
    """Poll ``predicate`` until truthy. An element that gradio re-renders between the lookup and the read
    (stale / not yet there) counts as "not yet" and is looked up again; the timeout still fails."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except (StaleElementReferenceException, NoSuchElementException):
            value = None
        if value:
            return value
        time.sleep(0.2)
    detail = ""
    if driver is not None:  # what the page looked like, for CI logs
        logs = [e.get("message", "")[:300] for e in driver.get_log("browser")][-8:]
        detail = f"\nbrowser console: {logs}\npage: {driver.page_source[:1500]}"
    raise AssertionError(f"timed out waiting for {what}{detail}")


def _selected_tab(driver) -> str:
    """Label of the selected top-level tab, read in one script call (gradio re-renders the tab row while
    switching, so a held element can go stale between finding it and reading its text)."""
    return driver.execute_script(
        "const b = document.querySelector('#tabs > .tab-nav > button.selected');"
        "return b ? b.textContent.trim() : '';"
    )


def _image_of(img) -> Any:
    """The PIL image an ``<img>`` element shows (data URL or served file)."""
    from PIL import Image

    src = img.get_attribute("src")
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:  # served file URL
        import urllib.request

        data = urllib.request.urlopen(src, timeout=10).read()
    return Image.open(io.BytesIO(data)).convert("RGB")


def _close_to(pixel, expected, tol=3) -> bool:
    """Plain gradio 4 re-encodes outputs as lossy webp (Forge and gradio 3 keep PNG)."""
    return max(abs(a - b) for a, b in zip(pixel, expected, strict=True)) <= tol


@pytest.mark.slow
def test_send_to_sadtalker_in_chromium(driver, make_extension, webui, monkeypatch, tmp_path):
    from selenium.webdriver.common.by import By

    picture = sample_png(tmp_path / "gallery" / "00001-123.png", size=(40, 30), color=(10, 200, 30))
    with _served(webui, make_extension, monkeypatch, picture) as url:
        driver.get(url)
        find = driver.find_elements
        button = _wait(lambda: find(By.ID, "txt2img_send_to_sadtalker"), what="send button", driver=driver)[0]
        assert button.find_elements(By.XPATH, "ancestor::*[@id='image_buttons_txt2img']")  # in the host's row
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#txt2img_gallery img"), what="gallery image")
        assert _selected_tab(driver) == "txt2img"
        button.click()
        img = _wait(
            lambda: driver.find_elements(By.CSS_SELECTOR, "#sadtalker_picture img"),
            what="picture",
            driver=driver,
        )[0]
        _wait(lambda: _selected_tab(driver) == "SadTalker", what="tab switch", driver=driver)
        assert driver.find_element(By.ID, "tab_sadtalker").is_displayed()
        assert not driver.find_element(By.ID, "tab_txt2img").is_displayed()
        got = _image_of(img)
        assert got.size == (40, 30)
        assert _close_to(got.getpixel((5, 5)), (10, 200, 30))

        # Generate with the sent picture but no recording: our sadtalker_submit() makes the task id, starts
        # the host progress request, and the queue-wrapped handler answers with the form error
        driver.find_element(By.ID, "sadtalker_generate").click()
        log = _wait(lambda: "speech recording" in driver.find_element(By.ID, "sadtalker_html_log").text,
                    what="form error", driver=driver)  # fmt: skip
        assert log
        requests = driver.execute_script("return window.sadtalkerProgressRequests")
        assert len(requests) == 1 and requests[0].startswith("task(")
        assert requests[0] in webui.progress.finished_tasks  # wrap_gradio_gpu_call saw the same id
        assert not driver.find_elements(
            By.ID, "txt2img_send_to_sadtalker_js"
        )  # no JS duplicate of our button


@pytest.mark.slow
def test_js_fallback_button_without_python_binding(driver, make_extension, webui, monkeypatch, tmp_path):
    from selenium.webdriver.common.by import By

    picture = sample_png(tmp_path / "gallery" / "00002-5.png", size=(36, 28), color=(220, 40, 90))
    with _served(webui, make_extension, monkeypatch, picture, python_binding=False) as url:
        driver.get(url)
        find = driver.find_elements
        button = _wait(
            lambda: find(By.ID, "txt2img_send_to_sadtalker_js"), what="fallback button", driver=driver
        )[0]
        assert not find(By.ID, "txt2img_send_to_sadtalker")  # no Python-wired button on this host
        assert button.find_elements(By.XPATH, "ancestor::*[@id='image_buttons_txt2img']")
        _wait(lambda: find(By.CSS_SELECTOR, "#txt2img_gallery img"), what="gallery image")
        button.click()
        _wait(lambda: _selected_tab(driver) == "SadTalker", what="tab switch", driver=driver)
        img = _wait(lambda: find(By.CSS_SELECTOR, "#sadtalker_picture img"), what="picture", driver=driver)[0]
        got = _image_of(img)
        assert got.size == (36, 28) and _close_to(got.getpixel((4, 4)), (220, 40, 90))
        # the upload reached the component's value: Generate gets past the picture check to the audio one
        driver.find_element(By.ID, "sadtalker_generate").click()
        _wait(lambda: "speech recording" in driver.find_element(By.ID, "sadtalker_html_log").text,
              what="form error", driver=driver)  # fmt: skip


def _infotext(driver) -> str:
    return driver.execute_script(
        "const t = document.querySelector('#sadtalker_infotext textarea'); return t ? t.value : '';"
    )


def _upload(driver, elem_id: str, path: Path) -> None:
    """Pick ``path`` in the input's file dialog (what a user's click on the upload area does)."""
    from selenium.webdriver.common.by import By

    field = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} input[type=file]"),
                  what=f"{elem_id} upload input", driver=driver)[0]  # fmt: skip
    field.send_keys(str(path))


@pytest.mark.slow
def test_generate_keeps_the_names_of_uploaded_files(driver, make_extension, webui, monkeypatch, tmp_path):
    """gradio hands Python temp names (3.41: ``tmpcan1rlob.png``, ``speech-0-100.wav``; 4: a nameless PIL
    picture): the tab's script sends the names the user picked, so the infotext and the video name show them;
    a picture sent from a gallery afterwards no longer carries the uploaded file's name."""
    from selenium.webdriver.common.by import By

    from tests.webui.conftest import sample_wav

    gallery_picture = sample_png(tmp_path / "gallery" / "00003-9.png", size=(40, 30), color=(10, 200, 30))
    face = sample_png(tmp_path / "my pictures" / "face.png", size=(48, 64), color=(200, 120, 90))
    speech = sample_wav(tmp_path / "my recordings" / "speech.wav")
    with _served(webui, make_extension, monkeypatch, gallery_picture) as url:
        driver.get(url)
        tab = _wait(lambda: sadtalker_tab(driver), what="SadTalker tab button", driver=driver)
        tab.click()
        for elem_id, path in (("sadtalker_picture", face), ("sadtalker_audio", speech)):
            _upload(driver, elem_id, path)
            # the file became the input's value (its upload event reached the tab's script)
            _wait(lambda elem_id=elem_id: driver.execute_script(f"return !!sadtalker_uploads['{elem_id}'];"),
                  what=f"{elem_id} upload", driver=driver)  # fmt: skip
        driver.find_element(By.ID, "sadtalker_generate").click()
        info = _wait(lambda: _infotext(driver), what="infotext", driver=driver)
        assert "Picture: face.png" in info and "Audio: speech.wav" in info, info
        videos = sorted(p.name for p in (webui.root / "outputs").rglob("*.mp4"))
        assert len(videos) == 1 and videos[0].startswith("face__speech"), videos

        # the picture replaced by "send to SadTalker": the upload's name no longer applies to it
        assert _select_tab(driver, "txt2img")
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#txt2img_gallery img"), what="gallery image")
        driver.find_element(By.ID, "txt2img_send_to_sadtalker").click()
        _wait(lambda: _selected_tab(driver) == "SadTalker", what="tab switch", driver=driver)
        time.sleep(1.0)  # the sent picture lands in the input
        driver.execute_script("document.querySelector('#sadtalker_infotext textarea').value = '';")
        driver.find_element(By.ID, "sadtalker_generate").click()
        info = _wait(lambda: "Picture:" in _infotext(driver) and _infotext(driver), what="second infotext")
        assert "Picture: face.png" not in info and "Audio: speech.wav" in info, info


def sadtalker_tab(driver):
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "#tabs > .tab-nav > button, #tabs .tab-nav button"):
        if button.text.strip() == "SadTalker":
            return button
    return None


def _select_tab(driver, label: str) -> bool:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "#tabs > .tab-nav > button, #tabs .tab-nav button"):
        if button.text.strip() == label:
            button.click()
            return True
    return False
