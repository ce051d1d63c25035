"""Run the lessons and build the book.

:func:`run_notebooks` executes ``notebooks/NN_*.ipynb`` in number order with
papermill, injecting ``PROFILE`` (and ``SEED`` when given) into each notebook's
``parameters`` cell, and saves the executed copies in ``build/notebooks/``. Each
notebook runs with ``notebooks/`` as its working directory, on a kernel that is this
very interpreter (``sys.executable``), so the lessons see the same packages as the
command that ran them.

:func:`build_book` stages ``book/`` and the executed notebooks in
``build/book-src/`` and builds them with Jupyter Book into ``build/book/``. The book
never executes anything itself (``execute_notebooks: "off"``): what it shows is what
``unikit run`` computed. Every lesson present in ``notebooks/`` becomes a chapter, placed
where ``book/_toc.yml`` says ``glob: notebooks/*``. Staging also draws the diagrams
(:mod:`unikit.diagrams`) into ``figures/``, writes the lessons' measured timings (from
``run-summary.json``) into ``generated/lesson_timings.md`` for the instructor's guide,
and copies a local MathJax that the HTML loads from ``_static/mathjax/``, so it reads
offline.

From the shell: ``unikit run --profile teach`` then ``unikit book`` (``make book``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from .cache import write_json
from .runtime import check_profile

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
BUILD_DIR = REPO_ROOT / "build"
EXECUTED_DIR = BUILD_DIR / "notebooks"
KERNEL_NAME = "unikit"
LESSONS_GLOB = "notebooks/*"  # the book/_toc.yml entry that stands for the lessons
FIGURES_DIR = "figures"
TIMINGS_FILE = "generated/lesson_timings.md"
SCHEDULES_FILE = "generated/schedules.md"
# MathJax goes in through html_extra_path (copied as is into the HTML), not through the
# source's _static/, where Jupyter Book would add every .js file to every page.
MATHJAX_DIR = "_mathjax/_static/mathjax"

_LESSON = re.compile(r"^(\d\d)_\w+\.ipynb$")


class RunError(ValueError):
    """A run or book that cannot start as asked; the message says what to do instead."""


class NotebookFailed(RuntimeError):
    """A cell of a lesson raised. Carries the notebook, the cell and every result so far."""

    def __init__(self, notebook: str, cell_index: int | None, first_line: str, error: str, output: Path, results: list[dict]):
        self.notebook, self.cell_index, self.first_line = notebook, cell_index, first_line
        self.error, self.output, self.results = error, output, results
        where = f" in cell {cell_index} ({first_line!r})" if cell_index is not None else ""
        super().__init__(f"{notebook} failed{where}: {error}\n"
                         f"  the partly executed notebook, with the traceback, is {output}")


# --------------------------------------------------------------------------- lessons


def find_notebooks(notebooks_dir=NOTEBOOKS_DIR) -> list[Path]:
    """The lessons ``NN_topic.ipynb`` in ``notebooks_dir``, in number order."""
    return sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if _LESSON.match(p.name))


def select_notebooks(notebooks: list[Path], only=None) -> list[Path]:
    """Keep the lessons whose number prefix is in ``only`` (``["00", "3"]``); all if empty."""
    if not only:
        return list(notebooks)
    by_number = {p.name[:2]: p for p in notebooks}
    wanted = [str(n).zfill(2) for n in only]
    unknown = [n for n in wanted if n not in by_number]
    if unknown:
        available = ", ".join(f"{n} ({p.stem})" for n, p in by_number.items()) or "none"
        raise RunError(f"no lesson numbered {', '.join(unknown)}; available: {available}")
    return [p for p in notebooks if p.name[:2] in wanted]


# --------------------------------------------------------------------------- kernel


def _kernel_python(name: str) -> str | None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        return KernelSpecManager().get_kernel_spec(name).argv[0]
    except NoSuchKernel:
        return None


def _install_kernel(prefix: Path) -> None:
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name="Python (unikit)", prefix=str(prefix))


def ensure_kernel() -> str:
    """Make the Jupyter kernel ``unikit`` start this interpreter; return its name.

    The spec goes into ``sys.prefix`` (the venv: nothing is registered for the user
    or the system). If that is not writable, or another ``unikit`` spec shadows it,
    a private spec under ``build/`` is put first on ``JUPYTER_PATH`` for this process.
    """
    if _kernel_python(KERNEL_NAME) == sys.executable:
        return KERNEL_NAME
    try:
        _install_kernel(Path(sys.prefix))
    except OSError:
        pass
    if _kernel_python(KERNEL_NAME) != sys.executable:
        private = BUILD_DIR / "jupyter"
        _install_kernel(private)
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(private / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")]))
    found = _kernel_python(KERNEL_NAME)
    if found != sys.executable:
        raise RunError(f"the Jupyter kernel {KERNEL_NAME!r} starts {found}, not {sys.executable}; remove that kernel spec")
    return KERNEL_NAME


def _kernel_config():
    """Encrypt the kernel's local channels when pyzmq can (and so skip ipykernel's warning)."""
    import zmq
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto"}}) if zmq.has("curve") else Config()


# --------------------------------------------------------------------------- run


def _silent(*args, **kwargs) -> None:
    pass


def _first_line(source: str) -> str:
    return next((line.strip() for line in source.splitlines() if line.strip()), "")


def _print_table(results: list[dict], echo=print) -> None:
    width = max([len("notebook")] + [len(r["notebook"]) for r in results])
    echo(f"{'notebook':<{width}}  {'seconds':>8}  ok")
    for r in results:
        echo(f"{r['notebook']:<{width}}  {r['seconds']:>8.1f}  {'yes' if r['ok'] else 'NO'}")


def run_notebooks(profile: str, only=None, seed: int | None = None, out_dir=EXECUTED_DIR,
                  notebooks_dir=NOTEBOOKS_DIR, quiet: bool = False, workers: int = 1) -> list[dict]:
    """Execute the lessons; return one ``{"notebook", "seconds", "ok", ...}`` per lesson, in order.

    Executed copies go to ``out_dir``; a summary goes to ``out_dir/../run-summary.json``.
    Stops at the first failing lesson and raises :class:`NotebookFailed` (the summary
    and the partly executed copy are written first). ``only`` selects lessons by
    number prefix; ``seed`` is injected as ``SEED`` only when given. ``workers`` > 1 runs that
    many lessons side by side, each kernel on one thread (``UNIKIT_THREADS=1``); lessons that
    need the same cached artifact may then both train it (the cache's writes are atomic).
    """
    echo = _silent if quiet else print
    from concurrent.futures import ThreadPoolExecutor

    check_profile(profile)
    notebooks = find_notebooks(notebooks_dir)
    if not notebooks:
        raise RunError(f"no lessons (NN_topic.ipynb) in {notebooks_dir}")
    if workers < 1:
        raise RunError(f"workers={workers}: run at least one lesson at a time")
    selected = select_notebooks(notebooks, only)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir.parent / "run-summary.json"
    kernel = ensure_kernel()
    parameters = {"PROFILE": profile} | ({"SEED": int(seed)} if seed is not None else {})
    done: dict[int, tuple[dict, NotebookFailed | None]] = {}
    stop = threading.Event()

    def run_one(i: int, path: Path) -> None:
        if stop.is_set():
            return
        result, failure = _execute(path, out_dir / path.name, parameters, kernel, notebooks_dir, profile, seed)
        done[i] = (result, failure)
        echo(f"[{i}/{len(selected)}] {path.stem} ... {'ok' if result['ok'] else 'FAILED'} "
             f"({result['seconds']:.1f} s)", flush=True)
        if failure:
            stop.set()

    saved = {k: os.environ.get(k) for k in ("UNIKIT_THREADS", "OMP_NUM_THREADS")}
    if workers > 1:  # the kernels inherit the environment they are started in
        os.environ.update(UNIKIT_THREADS="1", OMP_NUM_THREADS="1")
    try:
        with ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(run_one, i, path) for i, path in enumerate(selected, 1)]:
                future.result()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    results, failure = [], None
    for i in sorted(done):
        result, fail = done[i]
        results.append(result)
        if fail and failure is None:
            failure = fail
            break
    if failure:
        failure.results = results[:-1]
    write_json(summary_path, {"profile": profile, "seed": seed, "python": sys.executable, "workers": workers,
                              "notebooks": results})
    echo()
    _print_table(results, echo)
    echo(f"summary: {summary_path}")
    if failure:
        raise failure
    return results


def _execute(path: Path, output: Path, parameters: dict, kernel: str, notebooks_dir, profile: str, seed):
    """One lesson through papermill: ``(result, NotebookFailed or None)``."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    start = time.perf_counter()
    failure = None
    try:
        papermill.execute_notebook(
            str(path), str(output), parameters=parameters, kernel_name=kernel,
            cwd=str(Path(notebooks_dir)), progress_bar=False, log_output=False, config=_kernel_config(),
        )
        ok, error = True, None
    except PapermillExecutionError as e:
        ok, error = False, f"{e.ename}: {e.evalue}"
        failure = NotebookFailed(path.name, e.cell_index, _first_line(e.source), error, output, [])
    except Exception as e:  # the kernel died (out of memory?), a cell timed out, ...
        ok, error = False, f"{type(e).__name__}: {e}"
        failure = NotebookFailed(path.name, None, "", error, output, [])
    result = {"notebook": path.stem, "seconds": round(time.perf_counter() - start, 2), "ok": ok, "error": error,
              "profile": profile, "seed": seed, "output": str(output)}
    return result, failure


# --------------------------------------------------------------------------- book


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
    """The personalization schedules (:data:`unikit.stages.SCHEDULES`) and token-group
    sizes (:data:`unikit.tokens.GROUP_SIZES`) of every profile, as a markdown table."""
    from .stages import SCHEDULES
    from .tokens import GROUP_SIZES

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
    return ("Written from `unikit.stages.SCHEDULES` and `unikit.tokens.GROUP_SIZES` when "
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
    echo = _silent if quiet else print
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
