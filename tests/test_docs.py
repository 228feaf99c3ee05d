"""The documentation site builds in strict mode (a broken link, anchor or API name
fails it), and its code examples compile, import what exists, and the testing
guide's example passes."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"


def python_blocks() -> list[tuple[str, str]]:
    return [
        (str(page.relative_to(ROOT)), code)
        for page in sorted(DOCS.rglob("*.md"))
        for code in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    ]


def test_the_site_builds_in_strict_mode_with_the_api_reference(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    reference = (tmp_path / "site/reference/taskbus/index.html").read_text()
    assert 'id="taskbus.TaskBus"' in reference and 'id="taskbus.TaskBus.submit"' in reference
    for page in ("guides/many-processes", "guides/testing", "guarantees"):
        assert (tmp_path / "site" / page / "index.html").is_file()


@pytest.mark.parametrize(("page", "code"), python_blocks(), ids=lambda value: value[:40])
def test_every_python_example_compiles_and_imports_names_that_exist(page: str, code: str) -> None:
    tree = ast.parse(code, filename=page)  # a syntax error fails here
    imports: list[ast.stmt] = [
        node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    exec(compile(ast.Module(body=imports, type_ignores=[]), page, "exec"), {})  # noqa: S102 - our docs' code


def test_the_testing_guides_example_passes_on_asyncio_and_trio() -> None:
    (code,) = [code for page, code in python_blocks() if page.endswith("testing.md")]
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/guides/testing.md", "exec"), namespace)  # noqa: S102 - our docs' code
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        for backend in ("asyncio", "trio"):
            anyio.run(test, backend=backend)  # type: ignore[arg-type]
