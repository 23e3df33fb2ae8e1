"""A linear chain: test, build, package, one after the other.

Each stage is a CI job that runs `pipeline run stage NAME`; a stage starts only when the one before
it succeeded. Render it: `pipeline render --target all`.
"""

from pipeline import CommitTest, Pipeline, Shell

with Pipeline("linear") as p:
    test = CommitTest(name="commit-test", commands=["python -m pytest -q"], timeout_minutes=15)
    build = Shell(
        name="build",
        commands=["python -m build --wheel --outdir dist"],
        env={"SOURCE_DATE_EPOCH": "1700000000"},
        timeout_minutes=20,
    )
    package = Shell(
        name="package",
        commands=["tar -czf dist/site.tar.gz dist/*.whl"],
        retries=2,
        description="Bundle the wheel; retried twice on failure.",
    )
    test >> build >> package
