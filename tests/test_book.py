"""The book's course pages and machinery, checked on a cheap build.

The build uses two tiny lessons that are never executed (staging only needs their
files), so it takes seconds, not the smoke run of every lesson that
``test_notebooks.py`` builds its book from.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from unikit import diagrams, methods
from unikit.book import BOOK_DIR, book_toc, build_book, lesson_timings_markdown
from unikit.run import find_notebooks

BIB_KEYS = {"unictokens", "omnipersona", "yollava", "yochameleon", "myvlm",
            "textualinversion", "dreambooth", "janus", "januspro", "bagel", "showo",
            "siglip", "vqgan", "cfg", "rollout", "umap", "tsne"}
FRONT = ["prerequisites", "model_and_methods", "maths"]
BACK = ["glossary", "limitations", "instructor_guide", "bibliography"]


def _tiny_lesson(path, title: str) -> None:
    params = nbformat.v4.new_code_cell('PROFILE: str = "teach"')
    params.metadata["tags"] = ["parameters"]
    intro = nbformat.v4.new_markdown_cell(f"# {title}\n\nAs {{cite}}`unictokens`: $x^2$.")
    nb = nbformat.v4.new_notebook(cells=[intro, params])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    """``(html_dir, stage_dir)`` of a book built from two unexecuted lessons, with a run
    summary that timed only the first."""
    root = tmp_path_factory.mktemp("tiny-book")
    lessons = root / "notebooks"
    lessons.mkdir()
    _tiny_lesson(lessons / "00_first.ipynb", "00 · First")
    _tiny_lesson(lessons / "01_second.ipynb", "01 · Second")
    summary = {"profile": "teach", "seed": None,
               "notebooks": [{"notebook": "00_first", "seconds": 75.0, "ok": True,
                              "error": None}]}
    (root / "run-summary.json").write_text(json.dumps(summary))
    index = build_book(executed_dir=lessons, out_dir=root / "book", notebooks_dir=lessons,
                       quiet=True)
    return index.parent, root / "book-src"


def _scripts(page) -> list[str]:
    return re.findall(r"<script\b[^>]*>", page.read_text())


# --------------------------------------------------------------------------- built book


def test_mathjax_is_loaded_from_the_books_own_files(tiny_book):
    html, _ = tiny_book
    assert (html / "_static" / "mathjax" / "MathJax.js").is_file()
    config = html / "_static" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js"
    assert config.is_file()
    for page in html.rglob("*.html"):
        remote = [s for s in _scripts(page) if re.search(r"src=\"https?://", s)
                  and "mathjax" in s.lower()]
        assert not remote, f"{page.name} loads MathJax from the network: {remote}"
        local = [s for s in _scripts(page) if "_static/mathjax/" in s]
        assert len(local) <= 1, f"{page.name} loads {len(local)} MathJax files, not one"
    maths = _scripts(html / "maths.html")
    assert any('src="_static/mathjax/MathJax.js' in s for s in maths)
    assert "MathJax.Hub.Config" in (html / "maths.html").read_text()


def test_bibliography_lists_every_reference(tiny_book):
    html, _ = tiny_book
    bib = (BOOK_DIR / "references.bib").read_text()
    assert set(re.findall(r"^@\w+\{(\w+),", bib, re.M)) == BIB_KEYS
    page = (html / "bibliography.html").read_text()
    assert page.count('role="doc-biblioentry"') == len(BIB_KEYS)
    for name in ("An", "Zhong", "Nguyen", "Alaluf", "Gal", "Ruiz", "Wu", "Chen", "Deng",
                 "Xie", "Zhai", "Esser", "Ho", "Abnar", "McInnes", "Maaten"):
        assert name in page
    lesson = (html / "notebooks" / "00_first.html").read_text()
    assert "An <em>et al.</em>" in lesson or "An et al." in lesson, "a lesson cites"


def test_glossary_defines_the_course_terms(tiny_book):
    html, _ = tiny_book
    page = (html / "glossary.html").read_text()
    assert "glossary" in page
    terms = set(re.findall(r'<dt id="term-([^"]+)"', page))
    for term in ("concept-token", "identifier", "coupled", "decoupled", "knowledge-replay",
                 "PARG", "hard-negative", "VQ-tokenizer", "codebook", "judge", "floor",
                 "classifier-free-guidance", "chance-level", "paired-comparison",
                 "bootstrap", "Holm-correction", "profile"):
        assert term in terms, f"the glossary has no entry {term!r}"


def test_course_pages_come_before_and_after_the_lessons(tiny_book):
    html, stage = tiny_book
    toc = yaml.safe_load((stage / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert files == FRONT + ["notebooks/00_first", "notebooks/01_second"] + BACK
    for name in FRONT + BACK:
        assert (html / f"{name}.html").is_file()


def test_diagrams_are_drawn_into_the_book(tiny_book):
    html, stage = tiny_book
    page = (html / "model_and_methods.html").read_text()
    for name in diagrams.DIAGRAMS:
        assert (stage / "figures" / f"{name}.svg").is_file()
        assert re.search(rf'<img [^>]*src="_images/{name}\.svg"', page), name
        assert (html / "_images" / f"{name}.svg").is_file()


def test_instructor_guide_shows_the_measured_timings(tiny_book):
    html, _ = tiny_book
    page = (html / "instructor_guide.html").read_text()
    assert "00 · First" in page and ">75<" in page and ">1.2<" in page
    assert "Not in this run, so not timed: 01_second" in page
    assert '<span class="pre">--profile</span> <span class="pre">teach</span>' in page


# --------------------------------------------------------------------------- the parts


def test_book_toc_puts_the_lessons_where_the_glob_is(tmp_path):
    lessons = [tmp_path / "00_a.ipynb", tmp_path / "01_b.ipynb"]
    in_parts = {"root": "intro", "parts": [
        {"caption": "front", "chapters": [{"file": "pre"}]},
        {"caption": "lessons", "chapters": [{"glob": "notebooks/*"},
                                            {"file": "notebooks/old"}]},
        {"caption": "back", "chapters": [{"file": "glossary"}]}]}
    toc = book_toc(in_parts, lessons)
    assert [[c["file"] for c in p["chapters"]] for p in toc["parts"]] == \
        [["pre"], ["notebooks/00_a", "notebooks/01_b"], ["glossary"]]
    assert in_parts["parts"][1]["chapters"][0] == {"glob": "notebooks/*"}, "input unchanged"
    flat = book_toc({"root": "intro", "chapters": [{"file": "pre"}]}, lessons)
    assert [c["file"] for c in flat["chapters"]] == ["pre", "notebooks/00_a",
                                                     "notebooks/01_b"]
    front = {"caption": "f", "chapters": [{"file": "p"}]}
    no_glob = book_toc({"root": "intro", "parts": [front]}, lessons)
    assert no_glob["parts"][-1] == {"caption": "Lessons",
                                    "chapters": [{"file": "notebooks/00_a"},
                                                 {"file": "notebooks/01_b"}]}


def test_timings_say_plainly_when_nothing_was_measured(tmp_path):
    lessons = find_notebooks()
    path = tmp_path / "run-summary.json"
    text = lesson_timings_markdown(path, lessons)
    assert text.startswith("**No measured timings.**")
    assert "unikit run --profile teach" in text
    path.write_text("{not json")
    assert "could not be read" in lesson_timings_markdown(path, lessons)
    smoke = {"profile": "smoke", "seed": 1,
             "notebooks": [{"notebook": lessons[0].stem, "seconds": 3.0, "ok": True}]}
    path.write_text(json.dumps(smoke))
    text = lesson_timings_markdown(path, lessons)
    assert "`smoke`-profile timings" in text and "seed 1" in text


def test_diagrams_follow_the_code(tmp_path):
    paths = diagrams.render_diagrams(tmp_path)
    assert sorted(paths) == sorted(diagrams.DIAGRAMS)
    assert all(p.read_text().lstrip().startswith("<?xml") for p in paths.values())
    assert diagrams.render_diagrams(tmp_path / "again")["token_layouts"].read_bytes() == \
        paths["token_layouts"].read_bytes(), "the same code draws the same file"
    teach = SimpleNamespace(profile="teach")
    for layout in ("coupled", "decoupled"):  # as the joint methods lay their tokens out
        groups, prompting = methods.joint_layout(teach, layout)
        _, added, per_task, _ = diagrams.LAYOUTS[layout]
        assert tuple(groups) == added
        drawn = diagrams.example_tokens(layout).sizes()
        assert groups == {g: k for g, k in drawn.items() if g != "identifier"}, "the diagram draws the rows added"
        assert {t: getattr(prompting, t) for t in diagrams.TASKS} == per_task
    prompt = diagrams.task_prompt("unified", "understanding")
    assert prompt.startswith("<bo> is <bo_s0>") and "<bo_u0>" in prompt
    rewritten = diagrams.replay_example()["rewritten"]
    assert rewritten == "a photo of <bo> wearing a yellow hat"
    with pytest.raises(diagrams.DiagramError, match="unknown diagram"):
        diagrams.render_diagrams(tmp_path, names=["nope"])
