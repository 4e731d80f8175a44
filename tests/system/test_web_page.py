"""The web page at GET /, in a real browser: Playwright driving Debian's chromium (never a downloaded
browser; scripts/setup-browser.sh installs it). Real photos are dropped, picked and pasted, and the
labels the page shows are checked, with the default model served by a live server."""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import real_photos


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CATDOG_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


CHROMIUM = chromium_path()
if CHROMIUM is None and os.environ.get("CATDOG_REQUIRE_BROWSER") == "1":
    pytest.fail("no Chromium on this machine, and CATDOG_REQUIRE_BROWSER=1 (CI) says the page must be tested")
if CHROMIUM is None:
    pytest.skip(
        "no Chromium on this machine: run scripts/setup-browser.sh (apt-get install chromium) "
        "or set CATDOG_CHROMIUM to a Chromium executable",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object, default_server: str) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1000, "height": 800})  # type: ignore[attr-defined]
    page = context.new_page()
    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith(default_server) or request.url.startswith(("data:", "blob:"))
            else outside.append(request.url)
        ),
    )
    refused = csp_violations(page)
    page.goto(default_server + "/")
    yield page
    context.close()
    assert not outside, f"the page fetched something from outside the service: {outside}"
    assert not refused, f"the page's own Content-Security-Policy refused: {refused}"


def csp_violations(page: object) -> list[str]:
    """Chromium's console lines for anything the page's Content-Security-Policy refused, as they come."""
    refused: list[str] = []
    page.on(  # type: ignore[attr-defined]
        "console",
        lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None,
    )
    return refused


def shown_labels(page: object, count: int) -> list[tuple[str, str]]:
    """(file name, label) of the `count` finished cards, in the order they are on the page."""
    # Locators, not wait_for_function: Playwright compiles a function string with eval, which the
    # page's Content-Security-Policy refuses.
    page.locator("#results .card.done").nth(count - 1).wait_for(timeout=60_000)  # type: ignore[attr-defined]
    cards = page.query_selector_all("#results .card")  # type: ignore[attr-defined]
    return [
        (card.query_selector(".name").inner_text(), card.query_selector(".label").text_content())
        for card in cards
    ]


def test_page_is_served_without_a_cdn(default_server: str) -> None:
    html = httpx.get(default_server + "/").text
    assert '<label class="button" for="files">' in html
    assert "http://" not in html and "https://" not in html
    for asset in ("/web/page.js", "/web/page.css"):
        response = httpx.get(default_server + asset)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text, f"{asset} links outside"
    total = sum(len(httpx.get(default_server + a).content) for a in ("/", "/web/page.js", "/web/page.css"))
    assert total < 20_000, f"the page is {total} bytes"


def test_pages_send_security_headers(default_server: str) -> None:
    for path in ("/", "/docs"):
        headers = httpx.get(default_server + path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "'unsafe-eval'" not in policy and "script-src 'self' 'unsafe-inline'" not in policy
    assert httpx.get(default_server + "/healthz").headers["x-content-type-options"] == "nosniff"


def test_the_page_policy_refuses_an_injected_script(browser: object, default_server: str) -> None:
    """The policy is enforced, not only sent: a script the page did not ship does not run."""
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    refused = csp_violations(page)
    page.goto(default_server + "/")
    page.wait_for_selector("#model:not(:empty)")
    assert not refused
    with pytest.raises(sync_api.Error):
        page.add_script_tag(content="window.injected = true")
    assert page.evaluate("window.injected === undefined")
    assert refused and "inline script" in refused[0]
    context.close()


def test_swagger_ui_works_under_its_policy(browser: object, default_server: str) -> None:
    """/docs renders every operation and "Try it out" reaches the API, with nothing refused by its CSP."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    refused = csp_violations(page)
    page.goto(default_server + "/docs#/operations/healthz_healthz_get")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    assert len(page.query_selector_all(".opblock")) >= 10
    operation = page.locator(".opblock-get").filter(has_text="/healthz").first
    if "is-open" not in (operation.get_attribute("class") or ""):
        operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    response = operation.locator(".live-responses-table tbody .response-col_status").first
    response.wait_for(timeout=30_000)
    assert response.inner_text().strip() == "200"
    context.close()
    assert not refused, f"Swagger UI's Content-Security-Policy refused: {refused}"


def test_picked_photos_get_their_labels(page: object) -> None:
    photos = real_photos(per_class=2)
    page.set_input_files("#files", [str(path) for path, _ in photos])  # type: ignore[attr-defined]
    assert shown_labels(page, len(photos)) == [(path.name, label) for path, label in photos]
    # Probability bar, pet flag and latency are filled in.
    card = page.query_selector("#results .card")  # type: ignore[attr-defined]
    assert card.query_selector(".fill").evaluate("e => parseFloat(e.style.width)") > 50
    assert "pet score" in card.query_selector(".flag").inner_text()
    assert "ms on the server" in card.query_selector(".latency").inner_text()
    assert "classified" in page.inner_text("#status")  # type: ignore[attr-defined]
    assert "efficientnet" in page.inner_text("#model")  # type: ignore[attr-defined]


def data_transfer(page: object, photos: list[Path]) -> object:
    """A DataTransfer holding `photos` as File objects, made in the page (what a real drop carries)."""
    files = [{"name": path.name, "data": base64.b64encode(path.read_bytes()).decode()} for path in photos]
    return page.evaluate_handle(  # type: ignore[attr-defined]
        """files => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), c => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name, {type: "image/jpeg"}));
            }
            return transfer;
        }""",
        files,
    )


def test_dropped_photos_get_their_labels(page: object) -> None:
    photos = real_photos(per_class=3)
    transfer = data_transfer(page, [path for path, _ in photos])
    page.dispatch_event("#drop", "dragenter", {"dataTransfer": transfer})  # type: ignore[attr-defined]
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})  # type: ignore[attr-defined]
    assert shown_labels(page, len(photos)) == [(path.name, label) for path, label in photos]


def test_pasted_photo_gets_its_label(page: object) -> None:
    (path, label), *_ = real_photos(per_class=1)
    transfer = data_transfer(page, [path])
    page.evaluate(  # type: ignore[attr-defined]
        "transfer => document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: transfer}))", transfer
    )
    assert shown_labels(page, 1) == [(path.name, label)]


def test_confidence_never_reads_as_certain(page: object) -> None:
    """The service answers at most 0.999999; the page shows that as "> 99.9%", never "100.0%"."""
    photos = real_photos(per_class=2)
    page.set_input_files("#files", [str(path) for path, _ in photos])  # type: ignore[attr-defined]
    shown_labels(page, len(photos))
    shown = page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#results .card .confidence", "cards => cards.map(c => c.textContent)"
    )
    assert shown and all(text and "100" not in text for text in shown), shown
    assert any(text == "> 99.9%" for text in shown), shown  # these photos are that clear


def test_a_non_pet_leads_with_not_a_cat_or_dog(page: object, non_pet_set: Path) -> None:
    """A photo flagged as neither shows that first; the cat/dog split is secondary, with no bar."""
    coffee = non_pet_set / "non-pets" / "coffee.png"
    (cat, _), *_ = real_photos(per_class=1)
    page.set_input_files("#files", [str(coffee), str(cat)])  # type: ignore[attr-defined]
    assert shown_labels(page, 2) == [("coffee.png", "Not a cat or dog"), (cat.name, "cat")]
    flagged = page.query_selector("#results .card")  # type: ignore[attr-defined]
    assert flagged.query_selector(".confidence").inner_text() == ""
    assert flagged.query_selector(".bar").is_hidden()
    assert flagged.query_selector(".secondary").inner_text().startswith("If it were one of the two: ")
    assert "neither a cat nor a dog" in flagged.query_selector(".flag").inner_text()


def test_a_failed_file_is_not_counted_as_classified(page: object, tmp_path: Path) -> None:
    """Cards keep the order the photos were given; a file that failed is counted apart, and gets a
    placeholder instead of a broken-image icon."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a photo")
    photos = [path for path, _ in real_photos(per_class=2)][:3]
    files = [photos[0], broken, photos[1], photos[2]]
    page.set_input_files("#files", [str(path) for path in files])  # type: ignore[attr-defined]
    shown = shown_labels(page, len(files))
    assert [name for name, _ in shown] == [path.name for path in files]
    sync_api.expect(page.locator("#status")).not_to_have_text(re.compile("^Classifying"))  # type: ignore[attr-defined]
    assert page.inner_text("#status") == "3 photos classified, 1 could not be classified."  # type: ignore[attr-defined]
    failed = page.query_selector_all("#results .card")[1]  # type: ignore[attr-defined]
    assert failed.query_selector("img") is None
    assert failed.query_selector(".placeholder").inner_text() == "no preview"
    assert not failed.query_selector(".error").is_hidden()


def test_errors_show_the_api_message(page: object, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a photo")
    page.set_input_files("#files", [str(broken)])  # type: ignore[attr-defined]
    page.wait_for_selector("#results .card.done .error:not([hidden])")  # type: ignore[attr-defined]
    message = page.inner_text("#results .card .error")  # type: ignore[attr-defined]
    assert "'broken.jpg'" in message and "not a decodable image" in message


def test_keyboard_reaches_the_file_picker(page: object) -> None:
    page.keyboard.press("Tab")  # type: ignore[attr-defined]
    focused = page.evaluate("document.activeElement.id")  # type: ignore[attr-defined]
    assert focused == "files"
    label = page.evaluate("document.querySelector('label[for=files]').textContent")  # type: ignore[attr-defined]
    assert "Choose photos" in label
    # The file input is in the layout (not display:none), so screen readers and keyboards reach it.
    assert page.evaluate("getComputedStyle(document.getElementById('files')).display") != "none"  # type: ignore[attr-defined]


CONTRAST_JS = """selector => {
    const luminance = rgb => {
        const [r, g, b] = rgb.match(/[0-9.]+/g).slice(0, 3).map(Number).map(v => v / 255)
            .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const background = element => {
        for (let e = element; e; e = e.parentElement) {
            const color = getComputedStyle(e).backgroundColor;
            const alpha = color.startsWith("rgba") ? Number(color.match(/[0-9.]+/g)[3]) : 1;
            if (alpha > 0) return color;
        }
        return "rgb(255, 255, 255)";
    };
    return Array.from(document.querySelectorAll(selector)).map(element => {
        const [a, b] = [luminance(getComputedStyle(element).color), luminance(background(element))];
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    });
}"""


def test_text_contrast_meets_wcag_aa(page: object, tmp_path: Path) -> None:
    """Every kind of text on the page, answers and errors included, has a contrast ratio of at
    least 4.5:1 against its background (WCAG 2 AA for normal text)."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    photos = [path for path, _ in real_photos(per_class=1)]
    page.set_input_files("#files", [str(p) for p in photos] + [str(broken)])  # type: ignore[attr-defined]
    shown_labels(page, len(photos) + 1)
    selectors = "h1, h2, p, .button, .label.cat, .label.dog, .confidence, .flag, .name, .latency, .error, a"
    ratios = page.evaluate(CONTRAST_JS, selectors)  # type: ignore[attr-defined]
    assert len(ratios) > 10
    assert min(ratios) >= 4.5, f"lowest contrast ratio {min(ratios):.2f}"


def test_screenshot_for_the_readme(page: object) -> None:
    """Writes docs/web-page.png when CATDOG_SCREENSHOT=1 (the README shows it)."""
    if os.environ.get("CATDOG_SCREENSHOT") != "1":
        pytest.skip("set CATDOG_SCREENSHOT=1 to refresh docs/web-page.png")
    photos = real_photos(per_class=2)
    from skimage import data as skimage_data

    coffee = Path(os.environ.get("TMPDIR", "/tmp")) / "coffee.png"
    from PIL import Image

    Image.fromarray(skimage_data.coffee()).save(coffee)
    page.set_input_files("#files", [str(p) for p, _ in photos] + [str(coffee)])  # type: ignore[attr-defined]
    shown_labels(page, len(photos) + 1)
    out = Path(__file__).resolve().parents[2] / "docs" / "web-page.png"
    page.screenshot(path=str(out), full_page=True)  # type: ignore[attr-defined]
    image = Image.open(out).convert("RGB")
    image.quantize(colors=128).save(out, optimize=True)
