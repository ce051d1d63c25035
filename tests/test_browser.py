"""The built book, opened in a real browser (Debian's chromium and chromium-driver, driven by
selenium): every page loads without a console error, every figure has pixels that are not
blank and a caption, no cell shows an error, every citation and cross-reference resolves, maths renders.

Without the browser the tests skip with the packages to install (``.ci/run`` installs them).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="the browser test needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")

HARMLESS = ("favicon.ico",  # the browser asks for one; the book has none
            "font at 'about:blank'", "about:blank - Failed to load resource")  # MathJax 2's web-font probe

# per image: loaded, and its pixels are not all one colour (drawn on a same-origin canvas)
FIGURES_JS = """
const out = [];
for (const img of document.querySelectorAll('main img, article img')) {
  if (!img.complete || img.naturalWidth === 0) { out.push({src: img.src, ok: false, why: 'did not load'}); continue; }
  const c = document.createElement('canvas');
  c.width = Math.min(img.naturalWidth, 400); c.height = Math.min(img.naturalHeight, 400);
  const g = c.getContext('2d'); g.drawImage(img, 0, 0, c.width, c.height);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let distinct = new Set();
  for (let i = 0; i < d.length && distinct.size < 3; i += 4 * 7) distinct.add(d[i] + ',' + d[i+1] + ',' + d[i+2] + ',' + d[i+3]);
  const blank = distinct.size > 1 ? '' : 'blank';
  // a figure a cell draws sits in a <figure> with a caption that says what to see in it
  const fig = img.closest('.cell_output') ? img.closest('figure') : null;
  const uncaptioned = img.closest('.cell_output') && !(fig && fig.querySelector('figcaption')) ? 'has no caption' : '';
  const why = [blank, uncaptioned].filter(Boolean).join(', ');
  out.push({src: img.src, ok: !why, why});
}
// a caption wraps a figure, never a table the same cell printed
for (const fig of document.querySelectorAll('.cell_output figure')) {
  if (!fig.querySelector('img')) out.push({src: (fig.querySelector('figcaption') || fig).innerText.slice(0, 80),
                                           ok: false, why: 'is a caption without a figure (one display per captioned cell)'});
}
return out;
"""
PAGE_JS = """
const text = document.querySelector('main') ? document.querySelector('main').innerText : document.body.innerText;
const errors = [...document.querySelectorAll('.cell_output .output.traceback, .cell_output .output.error, ' +
                                             '.cell_output .stderr')].map(e => e.innerText.slice(0, 200))
                 .filter(t => /Error|Traceback/.test(t));
const unresolved = [...document.querySelectorAll('span.xref, code.xref')].filter(e => !e.closest('a'))
                   .map(e => e.innerText);
const citations = [...document.querySelectorAll('a[href*="bibliography"]')].length;
const maths = [...document.querySelectorAll('div.math, span.math')]
                .filter(e => !(e.id || '').startsWith('MathJax-Span')).length;  // not MathJax's own spans
const mathErrors = document.querySelectorAll('.MathJax_Error, merror').length;
return {errors, unresolved, citations, maths, mathErrors,
        unknownCitation: /\\[\\?\\]|\\?\\?/.test(text)};
"""


@pytest.fixture(scope="module")
def book_html(smoke_book):
    return smoke_book.parent


def serve(directory):
    """A local HTTP server for ``directory`` in a thread: ``(server, base url)``."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def start_browser():
    """Headless Chromium under chromedriver, keeping the console's messages."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def _pages(book_html):
    return sorted(p.relative_to(book_html).as_posix() for p in book_html.rglob("*.html")
                  if not p.relative_to(book_html).parts[0].startswith("_") and p.name not in ("genindex.html", "search.html"))


def _typeset_count(driver, timeout: float = 30.0) -> int:
    """How many formulas MathJax typeset on the page, once its queue has run (-1: no MathJax)."""
    driver.set_script_timeout(timeout)
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const wait = (tries) => {
          if (window.MathJax && MathJax.Hub && MathJax.Hub.Queue) {
            MathJax.Hub.Queue(() => done(MathJax.Hub.getAllJax().length));
          } else if (tries > 0) { setTimeout(() => wait(tries - 1), 100); } else { done(-1); }
        };
        wait(50);""")


def check_book(book_html, site, driver) -> tuple[dict, list[str]]:
    """Open every page; ``(counts of pages, figures, citations, maths, problems found)``."""
    counts = {"pages": 0, "figures": 0, "citations": 0, "maths": 0}
    problems = []
    for page in _pages(book_html):
        driver.get(f"{site}/{page}")
        typeset = _typeset_count(driver)
        counts["pages"] += 1
        severe = [e["message"] for e in driver.get_log("browser")
                  if e["level"] == "SEVERE" and not any(x in e["message"] for x in HARMLESS)]
        problems += [f"{page}: console error: {m}" for m in severe]
        for fig in driver.execute_script(FIGURES_JS):
            counts["figures"] += 1
            if not fig["ok"]:
                problems.append(f"{page}: figure {fig['src']} {fig['why']}")
        info = driver.execute_script(PAGE_JS)
        problems += [f"{page}: a cell shows an error: {e}" for e in info["errors"]]
        problems += [f"{page}: unresolved reference {u!r}" for u in info["unresolved"]]
        if info["unknownCitation"]:
            problems.append(f"{page}: an unresolved citation ([?] or ??) in the text")
        if info["maths"] and (typeset < info["maths"] or info["mathErrors"]):
            problems.append(f"{page}: maths not rendered ({typeset} formulas typeset for {info['maths']} "
                            f"maths elements, {info['mathErrors']} errors)")
        counts["citations"] += info["citations"]
        counts["maths"] += info["maths"]
    return counts, problems


@pytest.fixture(scope="module")
def book_html(smoke_book):
    return smoke_book.parent


def test_every_page_of_the_book_in_a_browser(book_html):
    server, site = serve(book_html)
    driver = start_browser()
    try:
        counts, problems = check_book(book_html, site, driver)
    finally:
        driver.quit()
        server.shutdown()
    (book_html / "browser-check.json").write_text(json.dumps(counts))
    print("browser check:", counts)
    assert not problems, "\n".join(problems)
    assert counts["figures"] > 0 and counts["citations"] > 0 and counts["maths"] > 0, counts
