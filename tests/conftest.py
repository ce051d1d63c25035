"""Shared fixtures: the repository's lessons, and one smoke run of all of them per session."""

from __future__ import annotations

import pytest

from unikit.run import NOTEBOOKS_DIR, find_notebooks, run_notebooks


@pytest.fixture(scope="session")
def lessons():
    """Every ``notebooks/NN_*.ipynb``, in order."""
    return find_notebooks(NOTEBOOKS_DIR)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Execute every lesson once with ``PROFILE="smoke"``; ``(executed_dir, results)``.

    Lessons load trained artifacts from ``UNIKIT_CACHE`` if present, else train them.
    """
    out_dir = tmp_path_factory.mktemp("smoke") / "notebooks"
    results = run_notebooks("smoke", out_dir=out_dir, quiet=True, workers=2)  # two one-thread kernels at a time
    return out_dir, results


@pytest.fixture(scope="session")
def smoke_book(smoke_run, tmp_path_factory):
    """The book built once from the smoke run: the path of its ``index.html``."""
    from unikit.run import build_book

    out_dir, _ = smoke_run
    return build_book(executed_dir=out_dir, out_dir=tmp_path_factory.mktemp("book") / "book", quiet=True)
