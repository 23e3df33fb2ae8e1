"""Fan-out, fan-in: three independent checks run in parallel after the commit test, and the
package stage waits for all three.
"""

from pipeline import CommitTest, Pipeline, Shell

with Pipeline("fan-out-fan-in") as p:
    test = CommitTest(name="commit-test", commands=["python -m pytest -q tests/unit"])
    lint = Shell(name="lint", commands=["ruff check .", "ruff format --check ."])
    types = Shell(name="types", commands=["mypy"])
    docs = Shell(name="docs", commands=["python -m mkdocs build --strict"], timeout_minutes=10)
    package = Shell(name="package", commands=["python -m build"])
    publish = Shell(name="publish", commands=["twine check dist/*"], branches=["main"])

    test >> [lint, types, docs]
    [lint, types, docs] >> package
    package >> publish
