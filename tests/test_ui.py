"""The playground page (/ui) in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium), against a real ``bentoml serve`` on models trained by the
real pipeline: the session's ``model_repo`` (lenet5 trained, mlp, and the broken versions) plus
dry runs of the VAE, the GAN, a GRU language model and the seq2seq dates model.

Every panel is used as a person would (pointer strokes on the canvas, clicks, a slider moved with
the keyboard) and photographed into ``SHOTS`` (``tests/ui-screenshots/``, ignored by git; the
README's docs/playground.png is a run's page.png, copied). The page must load and run without a
console error, and every request it makes must succeed: Chromium's network log is read after each
test, and a 4xx/5xx or a failed load fails it; the only load allowed to end early is the token
stream the Stop button aborts.
"""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
import time

import httpx
import numpy as np
import pytest
from conftest import ROOT, Server
from PIL import Image

SHOTS = ROOT / "tests" / "ui-screenshots"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium: pip install -e .[dev]")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "Debian's chromium and chromium-driver are needed (make setup installs them)",
        allow_module_level=True,
    )
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def ui_server(zoo_repo):  # conftest: one model of every task
    with Server(zoo_repo, env={"DLZOO_FRONT_WORKERS": "1"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace to sandbox with
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class Network:
    """What Chromium's performance log says about the page's requests: every URL and status, and
    the failed ones (an HTTP error, or a load that failed)."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self.urls: dict[str, str] = {}
        self.responses: list[tuple[str, int]] = []
        self.failures: list[str] = []
        self.cancelled: list[str] = []

    def read(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            method, params = message["method"], message.get("params", {})
            if method == "Network.requestWillBeSent":
                self.urls[params["requestId"]] = params["request"]["url"]
            elif method == "Network.responseReceived":
                url, status = params["response"]["url"], params["response"]["status"]
                self.responses.append((url, status))
                if status >= 400:
                    self.failures.append(f"{status} {url}")
            elif method == "Network.loadingFailed":
                url = self.urls.get(params["requestId"], "?")
                if params.get("canceled") and url.endswith("/generate_stream"):
                    self.cancelled.append(url)  # the Stop button aborts the stream
                else:
                    self.failures.append(f"{params.get('errorText')} {url}")


@pytest.fixture(scope="module")
def page(browser, ui_server):
    """The page, loaded once: its network log and console are checked after every test."""
    network = Network(browser)
    browser.get(ui_server.url + "/ui")
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.body.dataset.ready === 'true'")
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield browser, network, ui_server


@pytest.fixture
def ui(page):
    browser, network, server = page
    yield browser, network, server
    network.read()
    console = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not console, f"console errors: {console}"
    assert not network.failures, f"failed requests: {network.failures}"


def wait_for(driver, condition, timeout=30.0, what="the page"):
    return WebDriverWait(driver, timeout).until(lambda d: condition(), message=f"waited for {what}")


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def shoot(driver, element_id: str, name: str) -> None:
    element = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].scrollIntoView()", element)
    element.screenshot(str(SHOTS / f"{name}.png"))


def metric(server_url: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(server_url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(f"{name}{{") and want in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- the tests, in the page's order -------------------------------------------------------------


def test_page_is_served_offline_and_linked_from_swagger(ui_server):
    page = httpx.get(ui_server.url + "/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("ui/app.js", "ui/style.css"):
        assert asset in page.text and httpx.get(f"{ui_server.url}/{asset}").status_code == 200
    assert "http://" not in page.text and "https://" not in page.text, "nothing from elsewhere"
    for asset in ("app.js", "style.css"):
        body = httpx.get(f"{ui_server.url}/ui/{asset}").text
        assert "http://" not in body and "https://" not in body, f"{asset} fetches nothing else"
    assert httpx.get(ui_server.url + "/ui/secret.txt").status_code == 404
    slash = httpx.get(ui_server.url + "/ui/", follow_redirects=True)
    assert slash.status_code == 200 and str(slash.url) == ui_server.url + "/ui"
    spec = httpx.get(ui_server.url + "/docs.json").json()
    assert "](./ui)" in spec["info"]["description"], "Swagger UI at / links to the playground"


def test_card_pictures_are_public_and_confined_to_the_repository(ui_server):
    base = ui_server.url + "/models/lenet5/1/pictures"
    names = httpx.get(base).json()
    assert "confusion.png" in names and "learning_curves.png" in names, names
    picture = httpx.get(f"{base}/confusion.png")
    assert picture.status_code == 200 and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    for path, words in [
        ("/models/lenet5/99/pictures", "no version 99"),
        ("/models/lenet5/1/pictures/card.json", "no picture"),
        ("/models/Bad..Name/1/pictures", "no version"),
    ]:
        r = httpx.get(ui_server.url + path)
        assert r.status_code == 404 and words in r.json()["error"], (path, r.text)
    # a slash, even encoded, is a path separator: no route, and nothing is read
    assert httpx.get(f"{base}/..%2Fcard.json").status_code == 404


def test_the_page_loads_every_control_labelled(ui):
    """No console error and no failed request while loading (checked by ``ui``), and every
    control has a name a screen reader reads (its label, aria-label, or text)."""
    driver, _, _ = ui
    assert driver.title == "dlzoo playground"
    unnamed = driver.execute_script(
        """
        return [...document.querySelectorAll("input, select, textarea, button, [tabindex]")]
          .filter((e) => !((e.labels && e.labels.length && e.labels[0].textContent.trim())
                           || e.getAttribute("aria-label") || e.textContent.trim()))
          .map((e) => e.id || e.outerHTML.slice(0, 80));
        """
    )
    assert unnamed == []
    nav = [a.get_attribute("hash") for a in driver.find_elements(By.CSS_SELECTOR, "nav a")]
    assert nav == ["#models", "#classify", "#generate", "#translate", "#latent"]


def test_models_panel_lists_every_version_with_its_card_and_pictures(ui):
    driver, _, server = ui
    listed = httpx.get(server.url + "/models").json()
    wait_for(
        driver,
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "#models-list article")) == len(listed),
        what="a card per version",
    )
    panel = text(driver, "models")
    for m in listed:
        assert f"{m['name']}@{m['version']}" in panel
    failed = [m for m in listed if m["status"] == "failed"]
    assert failed and all(m["reason"][:40] in panel for m in failed), "failures with reasons"
    lenet = driver.find_element(By.CSS_SELECTOR, "article[aria-label='lenet5@1']")
    assert "digits" in lenet.text and "CPUExecutionProvider" in lenet.text
    wait_for(
        driver,
        lambda: (
            all(
                driver.execute_script(
                    "return arguments[0].complete && arguments[0].naturalWidth", i
                )
                for i in lenet.find_elements(By.TAG_NAME, "img")
            )
            and len(lenet.find_elements(By.TAG_NAME, "img")) >= 2
        ),
        what="lenet5's pictures",
    )
    shoot(driver, "models", "models")


def test_a_stroke_on_the_canvas_shows_a_top1_label_and_bars(ui):
    """Keys, a file and pointer strokes; the bars follow a stroke while it is drawn."""
    driver, network, _ = ui
    from selenium.webdriver.common.action_chains import ActionChains

    def classified() -> int:
        network.read()
        return sum(url.endswith("/classify") for url, _ in network.responses)

    Select(driver.find_element(By.ID, "classify-model")).select_by_value("lenet5")
    pad = driver.find_element(By.ID, "pad")
    driver.execute_script("arguments[0].scrollIntoView()", pad)
    # the keyboard draws too: arrows from the pen's position; then clear
    pad.send_keys(*[Keys.ARROW_UP] * 6, *[Keys.ARROW_LEFT] * 4, *[Keys.ARROW_DOWN] * 8)
    wait_for(driver, lambda: text(driver, "classify-top1") != "", what="a label for keys")
    driver.find_element(By.ID, "pad-clear").click()
    assert text(driver, "classify-top1") == ""
    # the file picker: the README's example digit, a 3, which the trained lenet5 gets right
    driver.find_element(By.ID, "classify-file").send_keys(str(ROOT / "examples" / "digit.png"))
    wait_for(driver, lambda: text(driver, "classify-top1").startswith("3 "), what="a 3")
    driver.find_element(By.ID, "pad-clear").click()
    # a "0": an oval around the canvas's centre (offsets from it), pausing along the way as a
    # hand does: each pause longer than the page's debounce
    oval = [(round(55 * math.sin(a)), round(-90 * math.cos(a))) for a in np.linspace(0, 6.4, 17)]
    before = classified()
    chain = ActionChains(driver).move_to_element_with_offset(pad, *oval[0]).click_and_hold()
    for i, (x, y) in enumerate(oval[1:]):
        chain.move_to_element_with_offset(pad, x, y)
        if i % 3 == 0:
            chain.pause(0.4)
    chain.release().perform()
    labels = [str(i) for i in range(10)]
    wait_for(driver, lambda: text(driver, "classify-top1") != "", what="a top-1 label")
    assert text(driver, "classify-top1").split(" ")[0] in labels
    bars = driver.find_elements(By.CSS_SELECTOR, "#classify-bars li")
    assert len(bars) == 5
    widths = [
        driver.execute_script("return arguments[0].getBoundingClientRect().width", b)
        for b in driver.find_elements(By.CSS_SELECTOR, "#classify-bars .bar")
    ]
    assert widths[0] > 0 and widths == sorted(widths, reverse=True), widths
    assert "lenet5@1" in text(driver, "classify-status")
    wait_for(driver, lambda: classified() - before >= 3, what="answers during the stroke")
    shoot(driver, "classify", "classify")


def test_a_generation_grows_token_by_token_and_stop_ends_it_on_the_server(ui):
    driver, network, server = ui
    ref = "gru@1"
    cancelled = metric(server.url, "dlzoo_generations_total", model=ref, reason="cancelled")
    Select(driver.find_element(By.ID, "gen-model")).select_by_value("gru")
    driver.find_element(By.ID, "gen-alternatives").click()
    driver.find_element(By.ID, "gen-seed").send_keys("11")
    driver.find_element(By.ID, "gen-start").click()
    lengths: list[int] = []
    deadline = time.monotonic() + 30
    while len(set(lengths)) < 4 and time.monotonic() < deadline:
        n = driver.execute_script("return document.getElementById('gen-output').textContent.length")
        if n and (not lengths or n != lengths[-1]):
            lengths.append(n)
    assert len(set(lengths)) >= 4 and lengths == sorted(lengths), lengths
    assert driver.find_element(By.ID, "gen-output").get_attribute("data-state") == "running"
    driver.find_element(By.ID, "gen-stop").click()
    wait_for(
        driver,
        lambda: driver.find_element(By.ID, "gen-output").get_attribute("data-state") != "running",
        what="the stop",
    )
    assert driver.find_element(By.ID, "gen-output").get_attribute("data-state") == "stopped"
    assert "Stopped" in text(driver, "gen-status")
    stopped_at = len(text(driver, "gen-output"))
    assert stopped_at < 2000, "it ended before its max_new_tokens"
    deadline = time.monotonic() + 20  # the server cancels at its next step
    while time.monotonic() < deadline:
        if metric(server.url, "dlzoo_generations_total", model=ref, reason="cancelled") > cancelled:
            break
        time.sleep(0.2)
    assert metric(server.url, "dlzoo_generations_total", model=ref, reason="cancelled") == (
        cancelled + 1
    ), "the server cancelled the generation"
    assert metric(server.url, "dlzoo_generation_streams", model=ref) == 0.0
    time.sleep(0.3)
    assert len(text(driver, "gen-output")) == stopped_at, "no text after the stop"
    network.read()
    assert network.cancelled, "the stream's load was aborted by the page"
    # the alternatives: focus the text, arrow to a character, see its top 5
    output = driver.find_element(By.ID, "gen-output")
    output.send_keys(Keys.ARROW_RIGHT)
    wait_for(
        driver,
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "#gen-alternatives-view li")) == 5,
        what="five alternatives",
    )
    assert "Token 1" in text(driver, "gen-alternatives-view")
    shoot(driver, "generate", "generate")


def test_a_date_shows_its_beam_candidates_and_an_attention_heat_map(ui):
    driver, _, _ = ui
    field = driver.find_element(By.ID, "tr-text")
    field.clear()
    field.send_keys("3 March 2021", Keys.ENTER)
    wait_for(
        driver,
        lambda: driver.find_elements(By.CSS_SELECTOR, "#tr-candidates tbody tr"),
        what="candidates",
    )
    rows = driver.find_elements(By.CSS_SELECTOR, "#tr-candidates tbody tr")
    assert 1 <= len(rows) <= 4
    log_probs = [float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows]
    assert all(lp <= 0 for lp in log_probs)
    columns = driver.find_elements(By.CSS_SELECTOR, "#tr-heatmap thead th")
    assert [c.text for c in columns] == list("3␣March␣2021")
    cells = driver.find_elements(By.CSS_SELECTOR, "#tr-heatmap tbody td")
    assert cells and len(cells) % len(columns) == 0
    weights = [float(c.get_attribute("data-w")) for c in cells[: len(columns)]]
    assert abs(sum(weights) - 1) < 0.01, "a row of attention sums to 1 over the source"
    shoot(driver, "translate", "translate")


def test_the_sample_grid_loads_and_the_slider_walks_the_interpolation(ui):
    driver, _, _ = ui
    grid = driver.find_element(By.ID, "lat-grid")
    wait_for(
        driver,
        lambda: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", grid
        ),
        what="the sample grid",
    )
    assert "seed 7" in text(driver, "lat-status")
    frame = driver.find_element(By.ID, "interp-frame")
    wait_for(driver, lambda: frame.get_attribute("src"), what="the first frame")
    first = frame.get_attribute("src")
    slider = driver.find_element(By.ID, "interp-slider")
    slider.send_keys(Keys.END)  # the keyboard moves the slider to the path's end
    wait_for(driver, lambda: frame.get_attribute("src") != first, what="another frame")
    assert driver.execute_script("return arguments[0].naturalWidth", frame) > 0
    assert "16 of 16" in frame.get_attribute("alt")
    driver.find_element(By.ID, "recon-go").click()  # the drawing from the Classify test
    recon = driver.find_element(By.ID, "recon")
    wait_for(
        driver,
        lambda: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", recon
        ),
        what="the reconstruction",
    )
    shoot(driver, "latent", "latent")


def test_the_whole_page_screenshot_and_a_phone_width(ui):
    """The README's picture: the whole page at a desktop width, after the tests above used it;
    at a phone's width nothing is wider than the screen."""
    driver, _, _ = ui
    driver.set_window_size(390, 844)
    wait_for(driver, lambda: driver.execute_script("return window.innerWidth") <= 390)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{overflow} px wider than a phone's screen"
    driver.save_screenshot(str(SHOTS / "phone.png"))
    driver.set_window_size(1280, 900)
    wait_for(driver, lambda: driver.execute_script("return window.innerWidth") > 1000)
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = driver.execute_cdp_cmd(  # the whole page, beyond the window
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    with Image.open(io.BytesIO(base64.b64decode(shot["data"]))) as page:
        # 256 colours: a third of the bytes, for the README's copy
        page.convert("RGB").quantize(colors=256).save(SHOTS / "page.png", optimize=True)
    assert (SHOTS / "page.png").stat().st_size > 10_000


def test_swagger_ui_at_the_root_links_to_the_page(browser, ui_server):
    """BentoML's Swagger UI at / (its own page: it asks the internet for badges, so its console is
    not this test's business) shows the link, and the link opens the playground (in a new tab, as
    Swagger UI opens the links of a description)."""
    browser.get(ui_server.url + "/")
    wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "a[href='./ui']"), what="it")
    home = browser.current_window_handle
    browser.find_element(By.CSS_SELECTOR, "a[href='./ui']").click()  # Swagger UI: a new tab
    wait_for(browser, lambda: len(browser.window_handles) == 2, what="the playground's tab")
    browser.switch_to.window([h for h in browser.window_handles if h != home][0])
    wait_for(browser, lambda: browser.current_url == ui_server.url + "/ui", what="the playground")
    wait_for(browser, lambda: browser.execute_script("return document.body.dataset.ready"))
    browser.close()
    browser.switch_to.window(home)
    browser.get_log("browser")  # read: not checked


def test_with_an_api_token_the_page_asks_for_it_and_sends_it(browser, zoo_repo):
    """DLZOO_API_TOKEN guards every endpoint: with the page's own files open, the page asks for the
    token at the first 401 and sends it with every later call (card pictures included)."""
    pages = "/ui,/ui/app.js,/ui/style.css"
    env = {"DLZOO_API_TOKEN": "s3cret", "DLZOO_OPEN_PATHS": f"/livez,/readyz,/metrics,{pages}"}
    with Server(zoo_repo, env=env) as server:
        assert httpx.get(server.url + "/models").status_code == 401
        browser.get(server.url + "/ui")
        form = browser.find_element(By.ID, "token-form")
        wait_for(browser, form.is_displayed, what="the token form")
        assert "API token" in text(browser, "models-status")
        network = Network(browser)
        network.read()  # the 401s so far
        network.failures.clear()
        browser.find_element(By.ID, "token").send_keys("s3cret", Keys.ENTER)
        wait_for(
            browser,
            lambda: browser.find_elements(By.CSS_SELECTOR, "article[aria-label='lenet5@1'] img"),
            what="the models, with the token",
        )
        lenet = browser.find_element(By.CSS_SELECTOR, "article[aria-label='lenet5@1']")
        wait_for(
            browser,
            lambda: all(
                browser.execute_script("return arguments[0].naturalWidth", i)
                for i in lenet.find_elements(By.TAG_NAME, "img")
            ),
            what="lenet5's pictures, fetched with the token",
        )
        grid = browser.find_element(By.ID, "lat-grid")
        wait_for(
            browser,
            lambda: browser.execute_script("return arguments[0].naturalWidth", grid),
            what="a sample grid",
        )
        network.read()
        assert not network.failures, network.failures
