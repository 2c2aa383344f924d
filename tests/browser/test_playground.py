"""The playground and the API reference in a real headless browser (Debian's chromium + chromedriver, selenium).

One ``darkroom serve`` on loopback (``tests/local_stack_process.py``, as the end-to-end suite starts it), a
fresh tenant from the CLI, then what a person does: paste the key, generate two images, paint a mask and
edit, ask about an image, look at usage and limits, open /docs. Each step leaves a screenshot in
``$DARKROOM_SCREENSHOTS`` (or a temporary folder, printed with ``-s``).

Without chromium, chromium-driver or selenium the tests are skipped, except under CI (``CI`` set), where
``.ci/run`` installs them and their absence is a failure.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from local_stack_process import REPO, clean_environment, serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
IMAGES_PER_MINUTE = 40
WAIT_SECONDS = 30
PAGE_LOAD_SECONDS = 60


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the dev extra: pip install -e '.[dev]')"
    if not CHROMIUM or not CHROMEDRIVER:
        return "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return None


MISSING = _missing()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(MISSING) and not os.environ.get("CI"), reason=f"browser test skipped: {MISSING}"),
]


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack():
    if MISSING:
        pytest.fail(f"CI must run the browser test: {MISSING} (.ci/run installs them)", pytrace=False)
    with serve({}) as exported:
        yield exported


@pytest.fixture(scope="module")
def origin(stack) -> str:
    """The stack's origin, once the console's container answers (its first request pays the imports)."""
    import urllib.request

    origin = stack["OPENAI_BASE_URL"].removesuffix("/").removesuffix("/v1")
    for page in ("/playground", "/docs"):
        with urllib.request.urlopen(f"{origin}{page}", timeout=60) as response:
            assert response.status == 200
    return origin


# The darkroom CLI's own commands (tenants create, keys issue) in one interpreter: half the start-up of two runs.
_MAKE_TENANT = """
import contextlib, io, json, sys
from darkroom.cli import main

def run(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main([*args, "--json"])
    assert status == 0, (args, status, out.getvalue())
    return json.loads(out.getvalue())

tenant = run("tenants", "create", sys.argv[1], "--images-per-minute", sys.argv[2], "--images-per-day", "1000",
             "--requests-per-minute", "100")
print(json.dumps(run("keys", "issue", tenant["tenant_id"])))
"""


@pytest.fixture(scope="module")
def api_key(stack) -> str:
    """A fresh tenant's newly issued key."""
    done = subprocess.run(
        [sys.executable, "-c", _MAKE_TENANT, f"browser-{uuid.uuid4().hex[:8]}", str(IMAGES_PER_MINUTE)],
        env=clean_environment() | stack,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"making a tenant failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])["key"]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("DARKROOM_SCREENSHOTS") or tmp_path_factory.mktemp("playground-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nplayground screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def driver(stack):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1700",
        "--no-first-run",
        "--disable-extensions",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(PAGE_LOAD_SECONDS)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    """A 64x48 PNG: blue with a yellow disc, so an edit and a description have something to work on."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 48), (30, 90, 160))
    ImageDraw.Draw(image).ellipse((16, 8, 48, 40), fill=(240, 200, 40))
    path = tmp_path_factory.mktemp("picture") / "disc.png"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


# -- helpers -------------------------------------------------------------------------------------------------


def wait(browser, condition, what: str, seconds: float = WAIT_SECONDS):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, seconds, poll_frequency=0.1).until(lambda b: condition(b))
    except TimeoutException:
        pytest.fail(f"timed out waiting for {what}; statuses: {statuses(browser)}", pytrace=False)


def statuses(browser) -> dict[str, str]:
    return browser.execute_script(
        "const out = {}; document.querySelectorAll('.status').forEach(e => out[e.id] = e.textContent); return out;"
    )


def text(browser, element_id: str) -> str:
    return browser.find_element("id", element_id).text


def csp_violations(browser) -> list[str]:
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
    ]


def open_playground(browser, origin: str, key: str) -> None:
    browser.get(f"{origin}/playground")
    browser.find_element("id", "api-key").send_keys(key)
    browser.find_element("id", "key-apply").click()
    wait(browser, lambda b: text(b, "key-status").startswith("Key accepted"), "the key to be accepted")


# -- the tests -----------------------------------------------------------------------------------------------


def test_key_generate_and_limits(driver, origin, api_key, shots):
    driver.get(f"{origin}/playground")
    assert driver.title == "darkroom playground"
    assert text(driver, "api-base") == f"{origin}/v1"
    # A wrong key: the API's error, shown as text.
    driver.find_element("id", "api-key").send_keys("dk-not-a-real-key")
    driver.find_element("id", "key-apply").click()
    wait(driver, lambda b: text(b, "key-status").startswith("Error 401"), "the 401 for a wrong key")
    assert "status error" == driver.find_element("id", "key-status").get_attribute("class")
    driver.find_element("id", "api-key").clear()
    driver.find_element("id", "api-key").send_keys(api_key)
    driver.find_element("id", "key-apply").click()
    wait(driver, lambda b: text(b, "key-status").startswith("Key accepted"), "the key to be accepted")
    models = [o.get_attribute("value") for o in driver.find_elements("css selector", "#gen-model option")]
    assert "local-image" in models and "local-vision" not in models  # only models that generate
    assert driver.find_element("id", "ask-model").get_attribute("value") == "local-vision"
    driver.save_screenshot(str(shots / "01-key.png"))

    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "gen-size")).select_by_value("256x256")
    Select(driver.find_element("id", "gen-quality")).select_by_value("low")
    count = driver.find_element("id", "gen-n")
    count.clear()
    count.send_keys("2")
    driver.find_element("id", "gen-prompt").clear()
    driver.find_element("id", "gen-prompt").send_keys("a red fox in the snow")
    driver.find_element("id", "gen-submit").click()
    wait(
        driver,
        lambda b: b.execute_script(
            "const imgs = [...document.querySelectorAll('#gen-results img')];"
            "return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0);"
        ),
        "two generated images",
    )
    sizes = driver.execute_script(
        "return [...document.querySelectorAll('#gen-results img')].map(i => [i.naturalWidth, i.naturalHeight]);"
    )
    assert sizes == [[256, 256], [256, 256]]
    assert text(driver, "gen-status").startswith("2 image(s), 256x256")
    # The limits panel: the images window dropped by exactly the two images.
    assert text(driver, "limit-limit-images") == str(IMAGES_PER_MINUTE)
    assert text(driver, "limit-remaining-images") == str(IMAGES_PER_MINUTE - 2)
    assert text(driver, "limit-reset-images").endswith("s")
    assert "POST /v1/images/generations" in text(driver, "limits-source")
    # The key is nowhere but the input: not in the URL, not in storage (the box is unticked).
    assert api_key not in driver.current_url
    assert driver.execute_script("return sessionStorage.length + localStorage.length") == 0
    driver.save_screenshot(str(shots / "02-generate.png"))
    assert csp_violations(driver) == []


def test_edit_with_a_painted_mask(driver, origin, api_key, shots, picture):
    from selenium.webdriver.common.action_chains import ActionChains

    open_playground(driver, origin, api_key)
    driver.find_element("id", "edit-file").send_keys(str(picture))
    wait(driver, lambda b: b.find_element("id", "edit-stage").is_displayed(), "the picture on the edit canvas")
    assert driver.execute_script("const c = document.getElementById('edit-canvas'); return [c.width, c.height];") == [
        64,
        48,
    ]
    overlay = driver.find_element("id", "edit-overlay")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", overlay)
    width = overlay.size["width"]
    # A stroke across the middle of the picture (offsets from the canvas's centre).
    (
        ActionChains(driver)
        .move_to_element_with_offset(overlay, -width // 4, 0)
        .click_and_hold()
        .move_by_offset(width // 8, 4)
        .move_by_offset(width // 8, -4)
        .move_by_offset(width // 8, 0)
        .release()
        .perform()
    )
    painted = driver.execute_script(
        "const c = document.getElementById('edit-overlay'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;"
    )
    assert 0 < painted < 64 * 48 // 2, painted
    driver.save_screenshot(str(shots / "03-edit-painted.png"))

    driver.find_element("id", "edit-submit").click()
    wait(
        driver,
        lambda b: b.execute_script(
            "const i = document.querySelector('#edit-results img'); return !!i && i.complete && i.naturalWidth > 0;"
        ),
        "the edited image",
    )
    assert "(masked)" in text(driver, "edit-status")
    # Compare pixels: changed where the stroke is, unchanged everywhere else.
    result = driver.execute_script("""
        const input = document.getElementById('edit-canvas');
        const overlay = document.getElementById('edit-overlay');
        const img = document.querySelector('#edit-results img');
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0);
        if (c.width !== input.width || c.height !== input.height) return {size: [c.width, c.height]};
        const a = input.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const b = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const m = overlay.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let inside = 0, outside = 0;
        for (let i = 0; i < a.length; i += 4) {
          const differs = Math.max(Math.abs(a[i] - b[i]), Math.abs(a[i + 1] - b[i + 1]),
                                   Math.abs(a[i + 2] - b[i + 2])) > 8;
          if (differs && m[i + 3] > 0) inside++;
          if (differs && m[i + 3] === 0) outside++;
        }
        return {size: [c.width, c.height], inside: inside, outside: outside,
                same_url: img.src === input.toDataURL('image/png')};
    """)
    assert result["size"] == [64, 48]
    assert result["inside"] > 0, result  # the painted area changed
    assert result["outside"] == 0, result  # nothing else did
    assert result["same_url"] is False
    driver.save_screenshot(str(shots / "04-edit-result.png"))
    assert csp_violations(driver) == []


def test_ask_about_an_image(driver, origin, api_key, shots, picture):
    open_playground(driver, origin, api_key)
    driver.find_element("id", "ask-file").send_keys(str(picture))
    wait(
        driver,
        lambda b: b.execute_script(
            "const i = document.getElementById('ask-preview'); return !i.hidden && i.naturalWidth === 64;"
        ),
        "the picture's preview",
    )
    question = driver.find_element("id", "ask-question")
    question.clear()
    question.send_keys("How big is this picture?")
    driver.find_element("id", "ask-submit").click()
    wait(driver, lambda b: text(b, "ask-answer"), "an answer")
    answer = text(driver, "ask-answer")
    assert "PNG, 64x48" in answer, answer
    assert "How big is this picture?" in answer  # local-vision echoes the question it received
    assert text(driver, "ask-status").startswith("Answered in")
    driver.save_screenshot(str(shots / "05-ask.png"))
    assert csp_violations(driver) == []


def test_usage_panel(driver, origin, api_key, shots):
    open_playground(driver, origin, api_key)
    driver.find_element("id", "usage-load").click()
    wait(driver, lambda b: not b.find_element("id", "usage-load").get_attribute("disabled"), "usage to load")
    status = text(driver, "usage-status")
    if driver.find_element("id", "usage-table").is_displayed():
        rows = driver.find_elements("css selector", "#usage-rows tr")
        assert rows, status
        assert any("local-image" in row.text for row in rows), [row.text for row in rows]
    else:  # GET /v1/usage not deployed on this stack: a clear message, not a broken table
        assert status == "Usage is not available on this server (GET /v1/usage answered 404).", status
    driver.save_screenshot(str(shots / "06-usage.png"))


def test_docs_render_the_operations(driver, origin, shots):
    driver.get(f"{origin}/docs")
    assert driver.title == "darkroom API reference"
    selector = "#swagger-ui .opblock.opblock-post .opblock-summary-path[data-path='/v1/images/generations']"
    wait(driver, lambda b: b.find_elements("css selector", selector), "Swagger UI's POST /v1/images/generations")
    operations = driver.find_elements("css selector", "#swagger-ui .opblock")
    assert len(operations) >= 10
    paths = {e.get_attribute("data-path") for e in driver.find_elements("css selector", ".opblock-summary-path")}
    assert {"/v1/models", "/v1/images/edits", "/v1/responses"} <= paths
    assert driver.find_elements("css selector", "#swagger-ui .btn.authorize")  # bearer auth offered
    # Open the operation: its parameters and "Try it out" are there.
    driver.find_element("css selector", selector).click()
    wait(driver, lambda b: b.find_elements("css selector", ".opblock.is-open .try-out__btn"), "the opened operation")
    time.sleep(0.3)  # the expand animation
    driver.save_screenshot(str(shots / "07-docs.png"))
    assert csp_violations(driver) == []
