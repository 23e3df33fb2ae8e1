"""Reading a definition writes nothing beside it: no __pycache__ for the definition or for the
user's modules it imports, even when the interpreter would write bytecode (CI machines do)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEFINITION = """
from helpers import NAME
from pipeline import CommitTest, Pipeline

with Pipeline(NAME) as p:
    CommitTest(name="commit-test", commands=["true"])
"""


def test_validate_leaves_no_pycache_next_to_the_definition(tmp_path: Path) -> None:
    (tmp_path / "pipelinefile.py").write_text(DEFINITION)
    (tmp_path / "helpers.py").write_text('NAME = "no-bytecode"\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    code = "from pipeline.loader import load; print(load(__import__('pathlib').Path('pipelinefile.py')).spec.name)"
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no-bytecode"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["helpers.py", "pipelinefile.py"]
