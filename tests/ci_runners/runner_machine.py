"""What a workflow written for GitHub's hosted runners expects of its machine, given to act's
self-hosted platform (this machine) without changing the machine or reaching the internet.

A job on `ubuntu-latest` may run `sudo apt-get update && sudo apt-get install -y PACKAGE` (an aws-
profile bake job does, to get debootstrap for a `pipeline-*` base image other than the default). A
hosted runner has passwordless sudo and an apt that reaches Ubuntu's mirrors. Here:

- `sudo`: a command on the runner's PATH that runs its arguments as the runner user, keeping the
  environment (the tests run as root, so that is what passwordless sudo gives; where the tests run
  as another user, commands that need root fail as they would under a sudo that refuses). Options
  (`-E`, `-n`, ...) other than `--` are refused, naming them.
- apt: `APT_CONFIG` names a configuration with no package sources and its own (empty) lists and
  archive folders, so `apt-get update` contacts nothing and changes nothing of the machine's apt, and
  `apt-get install -y PACKAGE` succeeds only for a package this machine already has ("already the
  newest version") and fails for any other, as an offline mirror would.

Everything lives in a folder of the test's run; nothing of the machine is changed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SUDO = """#!/bin/sh
# sudo of a runner with passwordless sudo, for a runner user that is root (tests/ci_runners/runner_machine.py)
case "${1:-}" in
    --) shift ;;
    -*) echo "sudo stand-in: option $1 is not emulated" >&2; exit 1 ;;
esac
[ "$#" -gt 0 ] || { echo "usage: sudo COMMAND [ARG...]" >&2; exit 1; }
exec "$@"
"""


def hosted_runner_environment(folder: Path, path: str) -> dict[str, str]:
    """Set up the `sudo` and offline apt described above in `folder`; returns the variables to add to
    the runner's environment (`path` is the runner's PATH, which gets the `sudo` folder first)."""
    bin_dir = folder / "bin"
    apt = folder / "apt"
    for made in (bin_dir, apt / "sources.list.d", apt / "lists" / "partial", apt / "cache" / "archives" / "partial"):
        made.mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text("# no sources: this runner installs nothing it does not have\n")
    (apt / "apt.conf").write_text(
        f'Dir::Etc::sourcelist "{apt / "sources.list"}";\n'
        f'Dir::Etc::sourceparts "{apt / "sources.list.d"}";\n'
        f'Dir::State::Lists "{apt / "lists"}";\n'
        f'Dir::Cache "{apt / "cache"}";\n'
    )
    sudo = bin_dir / "sudo"
    sudo.write_text(SUDO)
    sudo.chmod(sudo.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": os.pathsep.join([str(bin_dir), path]), "APT_CONFIG": str(apt / "apt.conf")}
