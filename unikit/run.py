"""Run the lessons.

:func:`run_notebooks` executes ``notebooks/NN_*.ipynb`` in number order with
papermill, injecting ``PROFILE`` (and ``SEED`` when given) into each notebook's
``parameters`` cell, and saves the executed copies in ``build/notebooks/``. Each
notebook runs with ``notebooks/`` as its working directory, on a kernel that is this
very interpreter (``sys.executable``), so the lessons see the same packages as the
command that ran them. :mod:`unikit.book` builds the book from those copies.

From the shell: ``unikit run --profile teach`` (``make book`` runs it, then ``unikit book``).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

from .cache import write_json
from .profiles import check_profile

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "build"
EXECUTED_DIR = BUILD_DIR / "notebooks"
KERNEL_NAME = "unikit"

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
    out_dir = Path(out_dir).resolve()
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
            # the kernel starts in the lessons' folder; the process keeps its own directory
            resources={"metadata": {"path": str(Path(notebooks_dir).resolve())}},
            progress_bar=False, log_output=False, config=_kernel_config(),
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
