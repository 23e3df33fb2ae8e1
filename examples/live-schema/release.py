"""Move this example to its next release: `python release.py 1.1.0` (then 1.2.0).

Each folder under next-releases/ holds the files that release changes (the app, new migrations);
they are copied over this project and RELEASE in pipelinefile.py is set. Then run the pipeline:

    pipeline run local --yes
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def release(version: str) -> list[str]:
    source = HERE / "next-releases" / version
    if not source.is_dir():
        known = ", ".join(sorted(p.name for p in (HERE / "next-releases").iterdir()))
        raise SystemExit(f"no release {version!r} in next-releases/ (known: {known})")
    copied = []
    for path in sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        target = HERE / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(path.relative_to(source).as_posix())
    definition = HERE / "pipelinefile.py"
    text = re.sub(r'^RELEASE = "[^"]+"$', f'RELEASE = "{version}"', definition.read_text(), count=1, flags=re.M)
    definition.write_text(text)
    return copied


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python release.py VERSION")
    for name in release(sys.argv[1]):
        print(f"updated {name}")
    print(f"RELEASE = {sys.argv[1]!r}: now run `pipeline run local --yes`")
