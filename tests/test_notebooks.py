"""The lessons: their conventions, a smoke run of all of them, the book built from it, and the runner's errors."""

from __future__ import annotations

import ast
import json
import os
import re
import sys

import nbformat
import papermill
import pytest

from unikit import cli
from unikit.book import build_book
from unikit.run import NOTEBOOKS_DIR, RunError, find_notebooks

LESSONS = find_notebooks(NOTEBOOKS_DIR)
ALL_NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
LITERAL_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "tuple": tuple, "dict": dict}


def _code(cell) -> str:
    """A code cell's source with IPython magics and shell escapes blanked, so ``ast`` can parse it."""
    lines = cell.source.splitlines()
    return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def _check_parameters(source: str) -> dict:
    """The parameters cell's ``{name: value}``; every statement must be ``NAME: type = literal``."""
    values = {}
    for stmt in ast.parse(source).body:
        assert isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None, \
            f"parameters cell: {ast.unparse(stmt)!r} is not a typed assignment like PROFILE: str = \"teach\""
        value = ast.literal_eval(stmt.value)  # raises on anything but a literal
        annotation = stmt.annotation.value if isinstance(stmt.annotation, ast.Subscript) else stmt.annotation
        assert isinstance(annotation, ast.Name) and annotation.id in LITERAL_TYPES, \
            f"parameters cell: {stmt.target.id}: annotate with one of {sorted(LITERAL_TYPES)}"
        assert type(value) is LITERAL_TYPES[annotation.id], \
            f"parameters cell: {stmt.target.id}: {value!r} is not a {annotation.id}"
        values[stmt.target.id] = value
    return values


def test_there_are_lessons():
    assert LESSONS, f"no lessons NN_topic.ipynb in {NOTEBOOKS_DIR}"
    assert [p.name for p in ALL_NOTEBOOKS] == [p.name for p in LESSONS], "every notebook is named NN_topic.ipynb"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    nb = nbformat.reads(path.read_text(), as_version=4)
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code_cells):
        assert not cell.outputs, f"code cell {i} has outputs: commit notebooks without outputs"
        assert cell.execution_count is None, f"code cell {i} has an execution count"
        tree = ast.parse(_code(cell))
        defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not defined, f"code cell {i} defines {defined}: helpers belong in unikit, called in one line"
        draws = re.search(r"^fig(, \w+)? = |= widgets\.\w+\(", cell.source, re.M)
        caption = cell.metadata.get("mystnb", {}).get("figure", {}).get("caption", "")
        assert caption or not draws, (f"code cell {i} draws a figure without a caption: add one to its "
                                      'metadata as {"mystnb": {"figure": {"caption": "what to see in it"}}}')
        long = [line for line in cell.source.splitlines() if len(line) > 90]
        assert not long, f"code cell {i} has lines over 90 characters (they scroll in the book): {long[0]!r}"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged 'parameters'; a lesson has exactly one"
    assert tagged[0].cell_type == "code"
    params = _check_parameters(tagged[0].source)
    assert params.get("PROFILE") == "teach", 'the parameters cell needs PROFILE: str = "teach"'
    # papermill reads every parameter too (its parser gives up on a line whose comment holds "=")
    read = {p["name"] for p in papermill.inspect_notebook(str(path)).values()}
    assert read == set(params), f"papermill cannot parse the parameters {sorted(set(params) - read)}"


def test_parameters_check_rejects_what_papermill_or_readers_would_trip_on():
    assert _check_parameters('PROFILE: str = "teach"\nSEED: int = 0\nLR: float = 1e-3\nNAMES: list[str] = ["bo"]') == \
        {"PROFILE": "teach", "SEED": 0, "LR": 1e-3, "NAMES": ["bo"]}
    for bad in ['PROFILE = "teach"', "SEED: int = 1.5", "FAST: int = True", "N: int = 2 * 8", "import os"]:
        with pytest.raises((AssertionError, ValueError)):
            _check_parameters(bad)


# --------------------------------------------------------------------------- smoke run and book


def test_every_lesson_runs_in_the_smoke_profile(smoke_run, lessons):
    out_dir, results = smoke_run
    assert [r["notebook"] for r in results] == [p.stem for p in lessons]
    assert all(r["ok"] for r in results)
    summary = json.loads((out_dir.parent / "run-summary.json").read_text())
    assert summary["profile"] == "smoke" and len(summary["notebooks"]) == len(lessons)
    for p in lessons:
        executed = nbformat.read(out_dir / p.name, as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and 'PROFILE = "smoke"' in injected[0].source


def test_lessons_run_on_a_janus_pro_shaped_checkpoint_in_the_gpu_smoke_profile(gpu_smoke_run, lessons):
    from conftest import GPU_SMOKE_LESSONS

    out_dir, results = gpu_smoke_run
    assert [r["notebook"] for r in results] == [p.stem for p in lessons if p.name[:2] in GPU_SMOKE_LESSONS]
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]]
    lesson_02 = next(p for p in lessons if p.name.startswith("02_"))
    printed = "".join(o.get("text", "") for c in nbformat.read(out_dir / lesson_02.name, as_version=4).cells
                      if c.cell_type == "code" for o in c.outputs)
    assert "384px, 576 understanding tokens, 24x24 VQ codes" in printed  # lesson 02 ran on the Janus-Pro-shaped model


def test_book_builds_from_the_executed_lessons(smoke_book, lessons):
    index = smoke_book
    html = index.parent
    assert index == html / "index.html" and index.is_file()
    assert (html / "intro.html").is_file()
    for p in lessons:
        page = html / "notebooks" / f"{p.stem}.html"
        assert page.is_file(), f"no book page for {p.name}"
        assert "<img" in page.read_text(), f"{p.name}: its book page shows no figure"


def test_book_without_executed_lessons_says_to_run_them_first(tmp_path):
    with pytest.raises(RunError, match="unikit run --profile teach"):
        build_book(executed_dir=tmp_path / "nothing", out_dir=tmp_path / "book", quiet=True)


# --------------------------------------------------------------------------- the runner's behaviour


def _lesson(path, *code: str) -> None:
    """Write a tiny lesson that follows the conventions: a parameters cell, then ``code`` cells."""
    params = nbformat.v4.new_code_cell('PROFILE: str = "teach"\nSEED: int = 0')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params] + [nbformat.v4.new_code_cell(c) for c in code])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def tmp_lessons(tmp_path):
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    _lesson(lessons / "00_where.ipynb",
            'import os, sys, json\nprint(json.dumps({"python": sys.executable, "cwd": os.getcwd(), "profile": PROFILE, "seed": SEED}))')
    _lesson(lessons / "01_broken.ipynb", "x = 1", "boom = 1 / 0  # this cell fails\nprint('never')", "print('never')")
    _lesson(lessons / "02_after.ipynb", "print('never reached')")
    return lessons


def test_run_injects_parameters_and_stops_at_a_failing_cell(tmp_lessons, tmp_path, capsys):
    out = tmp_path / "out" / "notebooks"
    code = cli.main(["run", "--profile", "smoke", "--seed", "7", "--notebooks-dir", str(tmp_lessons), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert "01_broken" in err and "boom = 1 / 0  # this cell fails" in err and "ZeroDivisionError" in err

    where = nbformat.read(out / "00_where.ipynb", as_version=4)
    printed = json.loads(where.cells[-1].outputs[0]["text"])
    assert printed == {"python": sys.executable, "cwd": str(tmp_lessons), "profile": "smoke", "seed": 7}
    assert (out / "01_broken.ipynb").is_file(), "the partly executed notebook is kept for reading the traceback"
    assert not (out / "02_after.ipynb").exists(), "the run stops at the first failure"
    summary = json.loads((out.parent / "run-summary.json").read_text())
    assert [(r["notebook"], r["ok"]) for r in summary["notebooks"]] == [("00_where", True), ("01_broken", False)]


def test_lessons_side_by_side_report_in_order_and_stop_at_the_first_failure(tmp_lessons, tmp_path, capsys):
    out = tmp_path / "out" / "notebooks"
    code = cli.main(["run", "--profile", "smoke", "--notebooks-dir", str(tmp_lessons), "--out", str(out),
                     "--workers", "2"])
    assert code != 0 and "01_broken" in capsys.readouterr().err
    summary = json.loads((out.parent / "run-summary.json").read_text())
    assert summary["workers"] == 2
    assert [(r["notebook"], r["ok"]) for r in summary["notebooks"]] == [("00_where", True), ("01_broken", False)]
    printed = json.loads(nbformat.read(out / "00_where.ipynb", as_version=4).cells[-1].outputs[0]["text"])
    assert printed["profile"] == "smoke"
    assert cli.main(["run", "--notebooks-dir", str(tmp_lessons), "--workers", "0"]) == 2
    assert "run at least one lesson at a time" in capsys.readouterr().err


def test_lessons_side_by_side_with_relative_folders_write_where_asked(tmp_path, monkeypatch):
    """Two kernels at once, folders given relative to where the command runs: each lesson runs in
    the lessons' folder, every output lands in ``--out``, and the caller's directory is untouched
    (papermill's ``cwd`` would change the whole process's directory under both threads)."""
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    names = ("00_a", "01_b", "02_c")
    for name, seconds in zip(names, (3.0, 0.1, 5.0)):  # 02_c starts while 00_a runs, and ends after it
        _lesson(lessons / f"{name}.ipynb", f"import time; time.sleep({seconds})", "import os; print(os.getcwd())")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--notebooks-dir", "lessons", "--out", "out/nb", "--workers", "2"]) == 0
    assert os.getcwd() == str(tmp_path)
    for name in names:
        nb = nbformat.read(tmp_path / "out" / "nb" / f"{name}.ipynb", as_version=4)
        assert nb.cells[-1].outputs[0]["text"].strip() == str(lessons)


def test_run_only_unknown_number_lists_the_lessons(tmp_lessons, capsys):
    code = cli.main(["run", "--only", "99", "--notebooks-dir", str(tmp_lessons)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "99" in err
    assert all(n in err for n in ("00 (00_where)", "01 (01_broken)", "02 (02_after)"))
