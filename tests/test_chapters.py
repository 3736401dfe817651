"""Every chapter executes at small parameters, and the rendered book opens in a real browser.

``SMALL`` holds each notebook chapter's overrides; it must name exactly the notebook chapters of
``_toc.yml``, so a new chapter cannot slip in untested and a renamed one cannot leave a stale
entry. The chapters are executed by the book runner itself (papermill, parameters table) into a
throw-away copy of the book, with their result caches in a temporary folder (never the book's
own cache); each executed notebook must hold no error output and at least one figure. Then the
copy is rendered with Jupyter Book and every page is opened in headless Chromium, which must
show the page's figures and no error output; a screenshot of each page is saved under
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

from pathlib import Path

import os
import shutil

import nbformat
import pytest

from visprune.book import build as book

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "lib" / "visprune" / "assets" / "toy-llava" / "config.json"

#: chapter name -> papermill overrides that make it small (results_dir is added by the test).
SMALL: dict[str, dict] = {
    "pope_calibration": {"splits": ["random", "adversarial"], "budgets": [64], "n_samples": 12, "n_bootstrap": 50},
    "scienceqa_calibration": {"budgets": [64], "n_samples": 16, "n_bootstrap": 50},
    "alpha_sweep": {"splits": ["random"], "budgets": [64], "alphas": [0.0, 1.0], "n_samples": 12, "n_bootstrap": 50},
    "gap_power": {"splits": ["random"], "budgets": [64], "gap_powers": [1.0, 2.0], "n_samples": 12, "n_bootstrap": 50},
    "recalibration": {"splits": ["random"], "budgets": [64], "alphas": [0.0], "n_samples": 12, "n_fit": 12,
                      "sqa_samples": 16, "sqa_fit": 16, "n_bootstrap": 50, "n_draws": 50},
    "calibration_primer": {"n_synthetic": 400, "n_samples": 24, "temperatures": [1.0, 2.5], "bin_counts": [5, 15],
                           "n_bootstrap": 50, "sample_sizes": [100, 300], "n_repeats": 4, "n_floor_draws": 50},
    "diversity_hallucination": {"budgets": [64], "methods": ["saliency", "divprune"], "n_captions": 8,
                                "max_new_tokens": 8, "n_examples": 2, "n_bootstrap": 50},
    "adaptive_pruner": {"budgets": [64], "n_pope": 24, "n_scienceqa": 16, "n_captions": 8, "max_new_tokens": 8,
                        "n_reference_images": 8, "n_bootstrap": 50},
    "every_method": {"budgets": [64, 192], "methods": ["random", "downsample", "no_image", "visionzip", "cdpruner",
                                                      "pdrop", "dart"],
                     "n_pope": 12, "n_scienceqa": 12, "n_captions": 6, "max_new_tokens": 8, "n_bootstrap": 50},
    "performance": {},  # reads the committed benchmark CSVs; runs no model
}


def test_overrides_name_exactly_the_chapters():
    chapters = {nb.stem for nb in book.chapter_notebooks(ROOT)}
    assert set(SMALL) == chapters, (
        f"tests/test_chapters.py SMALL must list every notebook chapter of _toc.yml: "
        f"missing {sorted(chapters - set(SMALL))}, stale {sorted(set(SMALL) - chapters)}"
    )


def test_committed_chapters_have_no_outputs():
    for nb_path in book.chapter_notebooks(ROOT):
        nb = nbformat.read(ROOT / nb_path, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{nb_path}: commit the notebook without outputs (cells {dirty})"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{nb_path}: exactly one cell must carry the 'parameters' tag"


needs_model = pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="the shipped toy model is not in lib/visprune/assets/toy-llava")


class SmallBook:
    """A throw-away copy of the book whose chapters are executed at their SMALL parameters."""

    def __init__(self, root: Path):
        self.root = root
        self.results = root / "results"
        for name in book.BOOK_FILES:
            shutil.copy2(ROOT / name, root / name)
        shutil.copytree(ROOT / "chapters", root / "chapters")
        self.executed: set[str] = set()

    def execute(self, chapter: str) -> Path:
        if chapter not in self.executed:
            source = self.root / "chapters" / f"{chapter}.ipynb"
            defaults = book.notebook_parameters(source)
            overrides = {**SMALL[chapter], "results_dir": str(self.results)}
            unknown = set(overrides) - set(defaults)
            assert not unknown, f"{chapter}: overrides name no parameter of the chapter: {sorted(unknown)}"
            book.execute_chapter(self.root, Path("chapters") / f"{chapter}.ipynb", overrides, force=True,
                                 kernel="python3")
            self.executed.add(chapter)
        return self.root / book.STAGING / "chapters" / f"{chapter}.ipynb"


@pytest.fixture(scope="module")
def small_book(tmp_path_factory):
    return SmallBook(tmp_path_factory.mktemp("book"))


@needs_model
@pytest.mark.parametrize("chapter", sorted(SMALL))
def test_chapter_executes_small(chapter, small_book):
    nb = nbformat.read(small_book.execute(chapter), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert [o for o in outputs if "image/png" in o.get("data", {})], f"{chapter}: no figure was drawn"
    assert any("parameters-table" in c.metadata.get("tags", []) for c in nb.cells)


def _chromium():
    """A headless Chromium driven by Selenium, from the system's packages (``make setup``)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if shutil.which("apt-get") and os.geteuid() == 0:  # `make setup` could have installed them
            pytest.fail("chromium/chromedriver missing: `make setup` installs them (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver on this system and no apt-get to install them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2000"):
        options.add_argument(flag)
    options.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=options)


@needs_model
def test_rendered_book_opens_in_a_browser(small_book):
    for chapter in sorted(SMALL):
        small_book.execute(chapter)
    html = book.render(small_book.root)
    shots = ROOT / "test-artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    pages = [Path(entry).as_posix() for entry in book.toc_files(ROOT)]  # index.html only redirects to the root
    browser = _chromium()
    try:
        for page in pages:
            path = html / f"{page}.html"
            assert path.is_file(), f"{page}: not rendered"
            browser.get(path.as_uri())
            browser.execute_script("if (document.body) window.scrollTo(0, document.body.scrollHeight)")
            title = browser.execute_script(
                "const h = document.querySelector('article h1') || document.querySelector('main h1');"
                "return h ? h.textContent.trim() : ''")
            assert title, f"{page}: no title"
            body = browser.find_element("tag name", "body").text
            assert "Traceback (most recent call last)" not in body, f"{page}: shows a traceback"
            assert not browser.find_elements("css selector", ".output.error, .output.traceback"), f"{page}: error output"
            if Path(page).stem in SMALL:
                images = browser.find_elements("css selector", "img")
                loaded = [im for im in images if browser.execute_script(
                    "return arguments[0].complete && arguments[0].naturalWidth > 0", im)]
                assert loaded, f"{page}: no figure shows"
                assert "Parameters this page was built with" in body, f"{page}: no parameters table"
            browser.save_screenshot(str(shots / f"{page.replace('/', '_')}.png"))
    finally:
        browser.quit()
