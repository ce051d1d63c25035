"""Build the book from the executed lessons.

:func:`build_book` stages ``book/`` and the executed notebooks (``unikit run``,
:mod:`unikit.run`) in ``build/book-src/`` and builds them with Jupyter Book into
``build/book/``. The book never executes anything itself (``execute_notebooks: "off"``):
what it shows is what ``unikit run`` computed. Every lesson present in ``notebooks/``
becomes a chapter, placed where ``book/_toc.yml`` says ``glob: notebooks/*``. Staging
also draws the diagrams (:mod:`unikit.diagrams`) into ``figures/``, writes the lessons'
measured timings (from ``run-summary.json``) into ``generated/lesson_timings.md`` for the
instructor's guide, and copies a local MathJax that the HTML loads from
``_static/mathjax/``, so it reads offline.

From the shell: ``unikit book`` (``make book`` runs the lessons first).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .run import BUILD_DIR, EXECUTED_DIR, NOTEBOOKS_DIR, REPO_ROOT, RunError, find_notebooks

BOOK_DIR = REPO_ROOT / "book"
LESSONS_GLOB = "notebooks/*"  # the book/_toc.yml entry that stands for the lessons
FIGURES_DIR = "figures"
TIMINGS_FILE = "generated/lesson_timings.md"
SCHEDULES_FILE = "generated/schedules.md"
# MathJax goes in through html_extra_path (copied as is into the HTML), not through the
# source's _static/, where Jupyter Book would add every .js file to every page.
MATHJAX_DIR = "_mathjax/_static/mathjax"

def _book_notebook(source: Path, target: Path) -> None:
    """Copy an executed lesson for the book, hiding papermill's injected-parameters cell."""
    nb = json.loads(source.read_text())
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    target.write_text(json.dumps(nb, indent=1))


def book_toc(toc: dict, lessons: list[Path]) -> dict:
    """``toc`` (book/_toc.yml) with one chapter ``notebooks/NN_topic`` per lesson.

    The lessons replace the entry ``glob: notebooks/*`` wherever it stands (in
    ``chapters`` or in one of ``parts``); without that entry they follow every listed
    chapter. Entries naming a ``notebooks/`` file are dropped (the lessons list them), and
    so are parts left with no chapter.
    """
    toc = json.loads(json.dumps(toc))  # a deep copy
    entries = [{"file": f"notebooks/{p.stem}"} for p in lessons]
    placed = False

    def fill(chapters) -> list:
        nonlocal placed
        out = []
        for c in chapters or []:
            if c.get("glob") == LESSONS_GLOB:
                out += entries
                placed = True
            elif not str(c.get("file", "")).startswith("notebooks/"):
                out.append(c)
        return out

    if toc.get("parts"):
        for part in toc["parts"]:
            part["chapters"] = fill(part.get("chapters"))
        if not placed:
            toc["parts"].append({"caption": "Lessons", "chapters": entries})
        toc["parts"] = [p for p in toc["parts"] if p["chapters"]]
    else:
        toc.pop("parts", None)
        toc["chapters"] = fill(toc.get("chapters"))
        if not placed:
            toc["chapters"] += entries
    return toc


def _lesson_title(path: Path) -> str:
    """A lesson's first markdown heading (``00 · The concept world``), else its stem."""
    try:
        cells = json.loads(Path(path).read_text()).get("cells", [])
    except (OSError, ValueError):
        return Path(path).stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return Path(path).stem


def lesson_timings_markdown(summary_path, lessons: list[Path]) -> str:
    """The measured time of each lesson, as a markdown table, from ``unikit run``'s
    ``run-summary.json``; says so plainly when there is no summary or it lacks lessons."""
    path = Path(summary_path)
    none = "**No measured timings.**"
    run_first = "Run the lessons (`unikit run --profile teach`) and rebuild the book."
    if not path.is_file():
        return (f"{none} No run summary (`{path.name}`) was found when this book was "
                f"built, so this guide cannot say how long the lessons take. {run_first}\n")
    try:
        summary = json.loads(path.read_text())
        rows = {r["notebook"]: r for r in summary["notebooks"]}
    except (ValueError, KeyError, TypeError) as e:
        return (f"{none} The run summary `{path.name}` could not be read "
                f"({type(e).__name__}: {e}). {run_first}\n")
    profile, seed = summary.get("profile", "?"), summary.get("seed")
    seed_text = "the lessons' default seed" if seed is None else f"seed {seed}"
    table, total, missing = [], 0.0, []
    for p in lessons:
        r = rows.get(p.stem)
        if r is None:
            missing.append(p.stem)
            continue
        seconds = float(r.get("seconds", 0.0))
        total += seconds
        ok = "yes" if r.get("ok") else "no: " + str(r.get("error")).replace("|", "/")
        table.append(f"| {_lesson_title(p)} | {seconds:.0f} | {seconds / 60:.1f} | {ok} |")
    if not table:
        return (f"{none} The run summary `{path.name}` lists none of this book's "
                f"lessons. {run_first}\n")
    lines = [f"Measured by `unikit run --profile {profile}` ({seed_text}) on the machine "
             f"that ran them, as recorded in `{path.name}`:", "",
             "| lesson | seconds | minutes | ran to the end |", "|---|---:|---:|---|",
             *table, f"| all lessons above | {total:.0f} | {total / 60:.1f} | |"]
    if missing:
        lines += ["", f"Not in this run, so not timed: {', '.join(missing)}. {run_first}"]
    if profile != "teach":
        lines += ["", f"These are `{profile}`-profile timings: they show that the lessons "
                  f"run, not how long a class needs. Plan sessions on a `teach` run."]
    return "\n".join(lines) + "\n"


def schedules_markdown() -> str:
    """The personalization schedules (:data:`unikit.profiles.SCHEDULES`) and token-group
    sizes (:data:`unikit.profiles.GROUP_SIZES`) of every profile, as a markdown table."""
    from .profiles import GROUP_SIZES, SCHEDULES

    fields = [("stage1_steps", "stage 1 steps"), ("stage2_steps", "stage 2 steps"),
              ("stage3_steps", "stage 3 steps"), ("joint_steps", "joint steps"),
              ("batch", "batch per task"), ("lr", "learning rate"),
              ("n_generated", "images drawn for stage 3"),
              ("l_gen", "joint weight of L_gen"), ("l_edit", "joint weight of L_edit"),
              ("guidance", "guidance w")]
    profiles = list(SCHEDULES)
    lines = ["| | " + " | ".join(f"`{p}`" for p in profiles) + " |",
             "|---|" + "---:|" * len(profiles)]
    for name, label in fields:
        values = [f"{v:g}" if (v := getattr(SCHEDULES[p], name)) is not None else "the model's own" for p in profiles]
        lines.append(f"| {label} (`{name}`) | " + " | ".join(values) + " |")
    for group in ("shared", "understanding", "generation", "editing"):
        values = [str(GROUP_SIZES.get(p, {}).get(group, "")) for p in profiles]
        lines.append(f"| {group} tokens | " + " | ".join(values) + " |")
    return ("Written from `unikit.profiles.SCHEDULES` and `unikit.profiles.GROUP_SIZES` when "
            "this book was built:\n\n" + "\n".join(lines) + "\n")


def mathjax_source() -> Path:
    """The MathJax files of the ``jupyter-server-mathjax`` package (MathJax 2.7)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise RunError("the book loads MathJax from its own files, which the package "
                       "jupyter-server-mathjax provides; install the book extra: "
                       "pip install -e '.[book]'") from None
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (static / "MathJax.js").is_file():
        raise RunError(f"no MathJax.js in {static}; reinstall jupyter-server-mathjax")
    return static


def stage_book(executed_dir=EXECUTED_DIR, stage_dir=BUILD_DIR / "book-src", book_dir=BOOK_DIR,
               notebooks_dir=NOTEBOOKS_DIR, summary_path=None) -> Path:
    """Copy ``book/`` and the executed lessons into ``stage_dir``, with a generated
    ``_toc.yml`` (:func:`book_toc`), the diagrams, the lessons' timings, the schedules
    table and a local MathJax.

    ``summary_path``: the run summary to take timings from (default: the
    ``run-summary.json`` beside ``executed_dir``, where ``unikit run`` writes it).
    """
    lessons = find_notebooks(notebooks_dir)
    if not lessons:
        raise RunError(f"no lessons (NN_topic.ipynb) in {notebooks_dir}")
    executed_dir = Path(executed_dir)
    missing = [p.stem for p in lessons if not (executed_dir / p.name).is_file()]
    if missing:
        raise RunError(f"no executed copy of {', '.join(missing)} in {executed_dir}; "
                       f"run `unikit run --profile teach` first (or `make book`, which does both)")
    mathjax = mathjax_source()

    stage_dir = Path(stage_dir)
    shutil.rmtree(stage_dir, ignore_errors=True)
    shutil.copytree(book_dir, stage_dir,
                    ignore=shutil.ignore_patterns("_build", "_toc.yml", ".ipynb_checkpoints"))
    (stage_dir / "notebooks").mkdir()
    for p in lessons:
        _book_notebook(executed_dir / p.name, stage_dir / "notebooks" / p.name)

    toc = book_toc(yaml.safe_load((Path(book_dir) / "_toc.yml").read_text()), lessons)
    (stage_dir / "_toc.yml").write_text(
        "# Generated by `unikit book` from book/_toc.yml and notebooks/.\n"
        + yaml.safe_dump(toc, sort_keys=False))

    from .diagrams import render_diagrams
    render_diagrams(stage_dir / FIGURES_DIR)
    summary = Path(summary_path or executed_dir.parent / "run-summary.json")
    (stage_dir / TIMINGS_FILE).parent.mkdir(parents=True, exist_ok=True)
    (stage_dir / TIMINGS_FILE).write_text(lesson_timings_markdown(summary, lessons))
    (stage_dir / SCHEDULES_FILE).write_text(schedules_markdown())
    shutil.copytree(mathjax, stage_dir / MATHJAX_DIR, dirs_exist_ok=True)
    return stage_dir


def build_book(executed_dir=EXECUTED_DIR, out_dir=BUILD_DIR / "book", book_dir=BOOK_DIR,
               notebooks_dir=NOTEBOOKS_DIR, quiet: bool = False) -> Path:
    """Build the HTML book from the executed lessons; return the path of its ``index.html``.

    Runs offline: nothing is executed and nothing is fetched.
    """
    echo = (lambda *a, **k: None) if quiet else print
    out_dir = Path(out_dir).resolve()
    stage_dir = stage_book(executed_dir, out_dir.parent / f"{out_dir.name}-src", book_dir, notebooks_dir)
    echo(f"building the book from {stage_dir} ...", flush=True)
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())", "build", str(stage_dir), "--path-output", str(out_dir), "--builder", "html"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log_path = out_dir / "build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(proc.stdout + proc.stderr)
    index = out_dir / "_build" / "html" / "index.html"
    if proc.returncode != 0 or not index.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RunError(f"jupyter-book failed (exit {proc.returncode}); full log in {log_path}:\n{tail}")
    echo(f"built in {time.perf_counter() - start:.0f} s; open {index}")
    return index
