"""The install routes agree: pyproject.toml, environment.yml, the Makefile and CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent


def _requirements(lines) -> dict[str, str]:
    """``{normalized name: specifier}`` for requirement strings (pip options skipped)."""
    reqs = [Requirement(line) for line in lines if not line.strip().startswith("-")]
    return {canonicalize_name(r.name): str(r.specifier) for r in reqs}


@pytest.fixture(scope="module")
def pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    return _requirements(lines)


@pytest.fixture(scope="module")
def environment_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    return pip_sections[0]


def test_environment_yml_names_the_same_packages_as_pyproject(pyproject_requirements, environment_pip):
    env = _requirements(environment_pip)
    assert sorted(env) == sorted(pyproject_requirements)
    assert env == pyproject_requirements, "same packages, but the version specifiers differ"
    assert "-e .[dev,book]" in environment_pip


def test_torch_is_pinned_everywhere(pyproject_requirements, environment_pip):
    assert pyproject_requirements["torch"] == "==2.13.0"
    assert _requirements(environment_pip)["torch"] == "==2.13.0"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH\s*:?=\s*torch==2\.13\.0\s*$", makefile, re.M), "Makefile: TORCH := torch==2.13.0"
    assert '"$(TORCH)" -e ".[dev,book]"' in makefile, "Makefile: pin torch in the same pip command as unikit"


def test_ci_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    assert script.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in script
    assert any(line.strip() == "make test" for line in script.splitlines())


def test_unikit_threads_sets_torch_threads_and_a_bad_value_is_named(monkeypatch):
    import torch

    from unikit import runtime

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("UNIKIT_THREADS", "1")
        assert runtime.set_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("UNIKIT_THREADS", "two")
        with pytest.raises(runtime.ThreadsError, match="UNIKIT_THREADS='two'.*whole number"):
            runtime.set_threads()
    finally:
        torch.set_num_threads(before)


def test_every_command_prints_its_help(capsys):
    from unikit.cli import build_parser, main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    commands = [a for a in build_parser()._subparsers._group_actions[0].choices]
    for command in commands:
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0, command
    assert "bench" in capsys.readouterr().out


def test_the_reader_path_is_one_import_away():
    """`import unikit` loads no heavy module; each exported name is the function of its module."""
    import subprocess
    import sys

    code = ("import sys, unikit; heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
    import importlib

    import unikit

    for name, module in unikit._EXPORTS.items():
        assert getattr(unikit, name) is getattr(importlib.import_module(f"unikit.{module}"), name)
    assert set(unikit.__all__) <= set(dir(unikit))
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        unikit.nope  # noqa: B018


def _unikit_imports() -> dict[str, set[str]]:
    """Every unikit module -> the unikit modules it imports, at the top or inside a function."""
    import ast

    root = Path(__file__).resolve().parent.parent / "unikit"
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                deps |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in files}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
        graph[name] = deps - {name}
    return graph


def test_no_module_imports_another_in_a_loop():
    graph = _unikit_imports()
    assert "unikit.formats" in graph["unikit.model.inputs"]  # the walk sees relative imports
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for dep in sorted(graph[module]):
            assert state.get(dep) != 1, f"import loop: {' -> '.join(path + [module, dep])}"
            if dep not in state:
                visit(dep, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
