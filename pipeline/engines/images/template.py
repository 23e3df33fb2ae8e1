"""A Bake's Packer template, checked before any side effect: `packer inspect` (its variables and
sources), the sources and variables the stage names, `packer validate`. A broken template is a
TemplateError (bad input, exit 2) naming the file and the fix.

What Packer said is remembered in the user's cache folder (never in the repository, so that
`pipeline validate` writes nothing there), keyed by everything it depends on (template
folder, variables, sources, the variables the engine offers, the packer binary), so an unchanged
template is not inspected and validated again on every run (that would be most of a cache hit's time).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from pipeline.engines.images.base import framework_variables, packer_env_vars
from pipeline.engines.packer import Packer, TemplateInfo, format_version
from pipeline.errors import TemplateError
from pipeline.hashing import digest, hash_paths
from pipeline.stages.bake import Bake

UNKNOWN_DEFAULT = '"<unknown>"'
"""How `packer inspect` shows a variable without a default."""


def _user_cache() -> Path:
    """$XDG_CACHE_HOME/pipeline-as-code/packer-validated (default ~/.cache/...): what Packer said
    about templates, one file per fingerprint; only speed, so never in the repository."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pipeline-as-code" / "packer-validated"


def _ignore(text: str) -> None:
    pass


def template_path(bake: Bake, root: Path) -> Path:
    """The stage's template, absolute; a TemplateError when it does not exist."""
    path = (root / bake.template).resolve()
    if not path.is_file():
        raise TemplateError(
            f"the Packer template {bake.template} does not exist (looked in {root})",
            hint="fix Bake.template (a path relative to the definition file)",
        )
    return path


def _binary_identity(path: str) -> list[str | int]:
    """Which packer binary this is, cheaply (no subprocess): path, size, modification time."""
    try:
        info = os.stat(path)
    except OSError:
        return [path]
    return [path, info.st_size, info.st_mtime_ns]


def check_template(
    bake: Bake,
    packer: Packer,
    root: Path,
    *,
    sources: list[str],
    offered: Mapping[str, str],
    remember: bool = False,
    step: Callable[[str], None] = _ignore,
    log: Callable[[str], None] = _ignore,
) -> TemplateInfo:
    """Check the stage's template (under the definition's folder `root`) for building `sources`
    with the variables the engine `offered`. Remembered in the user's cache (when `remember`) once Packer
    has accepted it."""
    template = template_path(bake, root)
    remembered = None
    if remember:
        fingerprint = digest(
            {
                "files": hash_paths(root, bake.files()),
                "variables": bake.variables,
                "base_image": bake.base_image,
                "sources": sources,
                "offered": dict(offered),
                "packer": _binary_identity(packer.binary),
                "pkr_vars": packer_env_vars(),
            }
        )
        remembered = _user_cache() / f"{fingerprint[:32]}.json"
        try:
            data = json.loads(remembered.read_text())
            log(f"{bake.template} is unchanged since Packer last validated it")
            return TemplateInfo(dict(data["variables"]), tuple(data["sources"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    info = _validate(bake, packer, template, sources=sources, offered=offered, step=step, log=log)
    if remembered is not None:
        with contextlib.suppress(OSError):
            remembered.parent.mkdir(parents=True, exist_ok=True)
            # Which variables have a default, not the defaults: one may come from env("SECRET").
            variables = {k: v if v == UNKNOWN_DEFAULT else "<default>" for k, v in info.variables.items()}
            remembered.write_text(json.dumps({"variables": variables, "sources": list(info.sources)}))
    return info


def _validate(
    bake: Bake,
    packer: Packer,
    template: Path,
    *,
    sources: list[str],
    offered: Mapping[str, str],
    step: Callable[[str], None],
    log: Callable[[str], None],
) -> TemplateInfo:
    step("packer validate")
    version = packer.version()
    log(f"packer {format_version(version)} ({packer.binary})")
    if packer.prepare(template, on_line=log):
        log("packer init: plugins installed")
    info = packer.inspect(template)
    rel = bake.template
    missing = [s for s in sources if info.sources and s not in info.sources]
    if missing:
        raise TemplateError(
            f"{rel} has no source {', '.join(missing)} (its builds use: {', '.join(info.sources)})",
            hint="set Bake(sources={'local': 'docker.NAME', 'aws': 'amazon-ebs.NAME'}) or add the source",
        )
    undeclared = sorted(set(bake.variables) - set(info.variables))
    if undeclared:
        raise TemplateError(
            f"{rel} declares no variable {', '.join(undeclared)} (given in Bake.variables)",
            hint=f'declare it in the template: variable "{undeclared[0]}" {{ type = string }}',
        )
    variables = framework_variables(info.variables, offered, bake.variables)
    unset = [name for name in info.required() if name not in variables]
    if unset:
        raise TemplateError(
            f"{rel} needs a value for variable {', '.join(unset)}",
            hint=f'set it in the stage: Bake(..., variables={{"{unset[0]}": "..."}})',
        )
    for source in sources:
        packer.validate(template, variables, only=source)
    return info
