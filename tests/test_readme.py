"""The README's quickstart runs as written."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_quickstart_runs_and_prints_progress_and_result(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python block"
    quickstart = blocks[0]
    assert len(quickstart.strip().splitlines()) <= 25
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].strip().startswith("0.0%")
    assert lines[-1] == "cloned https://example.com/repo.git"
    assert any("100.0% receiving objects 100%" in line for line in lines)


def test_every_install_line_installs_from_a_clone_with_extras_that_exist() -> None:
    """taskbus is not on the package index: each `pip install` line of the README
    installs the clone, and names only extras pyproject.toml defines."""
    import tomllib

    pyproject = tomllib.loads((README.parent / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    lines = [line for line in README.read_text().splitlines() if "pip install" in line]
    assert lines, "the README says how to install"
    for line in lines:
        command = line.split("#")[0].strip().replace("'", "")
        assert re.fullmatch(r"pip install -e \./taskbus(\[[a-z,]+\])?", command), line
        named = re.findall(r"\[([a-z,]+)\]", command)
        assert set(",".join(named).split(",")) - {""} <= extras, line
    assert "taskbus[" not in README.read_text().replace("./taskbus[", "")
