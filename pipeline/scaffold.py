"""`pipeline init`: write the reference service (or a bundled example) into a folder."""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.bundled import REFERENCE_PARTS, bundled_root, examples
from pipeline.errors import BadInputError

REFERENCE = "hello-web"

REFERENCE_PIPELINEFILE = '''\
"""The Hello World web service, from commit to production.

Change RELEASE, then `pipeline run local --yes`: the new page is baked into an image, checked with
testinfra, rehearsed on an ephemeral stack (update, then rollback) and promoted.
"""

from pipeline import (
    Approval,
    Bake,
    CommitTest,
    Environment,
    Pipeline,
    Promote,
    SimulatedRollback,
    Teardown,
    TestStack,
    UpdateStack,
    Verify,
)

RELEASE = "1.0.0"
page = Verify(path="/", expect_text=f"Hello World {RELEASE}", requests=20)
healthy = Verify(path="/health", requests=10)

with Pipeline(
    "hello-web",
    environments=[
        Environment(name="test", ephemeral=True),
        Environment(
            name="production",
            template="templates/web.yaml",
            # Who may approve: CI user names (Jenkins submitter, TeamCity user, GitHub reviewer).
            approval=Approval(message="Promote the new image to production?", approvers=("release-manager",)),
        ),
    ],
    profile="aws",  # what CI uses; `pipeline run local` rehearses on Docker unless told --profile aws
) as p:
    commit_test = CommitTest(
        name="commit-test",
        commands=["cfn-lint templates/web.yaml", "packer validate -syntax-only images/web.pkr.hcl"],
        inputs=("templates", "images"),
    )
    bake = Bake(name="bake", template="images/web.pkr.hcl", checks="serverspec", variables={"version": RELEASE})
    test_stack = TestStack(name="test-stack", environment="test", like="production", image=bake, verify=healthy)
    update = UpdateStack(name="update-stack", stack=test_stack, image=bake, verify=page)
    rollback = SimulatedRollback(name="rollback", stack=test_stack, verify=healthy)
    teardown = Teardown(name="teardown", stack=test_stack)
    promote = Promote(name="promote", environment="production", image=bake, verify=page)

    commit_test >> bake >> test_stack >> update >> rollback >> teardown >> promote
'''


@dataclass(frozen=True)
class Scaffolded:
    name: str
    target: Path
    files: list[str]


def available() -> list[str]:
    return [REFERENCE, *examples()]


def listing() -> list[tuple[str, str]]:
    """(name, what it shows) for everything `init` can write, for `pipeline init --list`."""
    found = examples()
    out = [(REFERENCE, summary(REFERENCE_PIPELINEFILE))]
    for name, folder in found.items():
        out.append((name, summary((folder / "pipelinefile.py").read_text(encoding="utf-8"))))
    return out


def summary(definition: str) -> str:
    """What a definition shows, in one line: the first paragraph of its module docstring (read, never
    imported), so each example describes itself and the list cannot drift from it."""
    try:
        doc = ast.get_docstring(ast.parse(definition)) or ""
    except SyntaxError:
        doc = ""
    first = " ".join(doc.split("\n\n", 1)[0].split())
    return first.rstrip(":")


def init(target: Path, name: str = REFERENCE) -> Scaffolded:
    """Copy the reference service or an example into `target`. Never overwrites: on any conflict
    nothing is written and the error lists the files in the way."""
    sources = _sources(name)
    conflicts = sorted(rel for rel in sources if (target / rel).exists())
    if conflicts:
        shown = ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else "")
        raise BadInputError(
            f"{target} already has {len(conflicts)} of the files to write: {shown}",
            hint="pick an empty folder: pipeline init DIR",
        )
    for rel, source in sorted(sources.items()):
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            shutil.copy2(source, dest)
        else:
            dest.write_text(source)
    return Scaffolded(name, target, sorted(sources))


def _sources(name: str) -> dict[str, Path | str]:
    root = bundled_root()
    if name == REFERENCE:
        files: dict[str, Path | str] = {"pipelinefile.py": REFERENCE_PIPELINEFILE}
        for part in REFERENCE_PARTS:
            for path in sorted((root / part).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.name != ".keep":
                    files[path.relative_to(root).as_posix()] = path
        return files
    found = examples()
    if name not in found:
        raise BadInputError(f"no example named {name!r}", hint=f"available: {', '.join(available())}")
    folder = found[name]
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "golden" not in p.relative_to(folder).parts and "__pycache__" not in p.parts
    }
