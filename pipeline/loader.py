"""Find and import the user's definition file; report its errors at the user's file and line.

The conventional name is `pipelinefile.py` (like Jenkinsfile or noxfile.py): a file named
`pipeline.py` at a repository root would shadow this package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from pipeline.authoring import Location, display_path, problems_from_validation, remembering_locations
from pipeline.builder import Pipeline, collect_pipelines, locate
from pipeline.errors import DefinitionError, DefinitionNotFoundError, Problem, UserCodeError
from pipeline.model import collecting_problems
from pipeline.spec import PipelineSpec, missing_files

DEFAULT_FILENAMES = ("pipelinefile.py",)


@dataclass(frozen=True)
class Loaded:
    """A validated definition and where it came from."""

    spec: PipelineSpec
    file: Path
    locations: dict[str, Location] = field(default_factory=dict)
    """Where each stage was created (file, line)."""
    location: Location | None = None
    """Where the pipeline was created (its environments are declared there)."""

    @property
    def root(self) -> Path:
        """Relative paths in the definition resolve against the definition's folder."""
        return self.file.parent


def find_definition(path: str | Path | None = None, *, start: Path | None = None) -> Path:
    """`path` if given; else the nearest `pipelinefile.py` in this folder or a parent."""
    if path is not None:
        candidate = Path(path)
        if candidate.is_dir():
            raise DefinitionNotFoundError(
                f"{str(path)!r} is a folder, not a definition file",
                hint=f"pass the file: -f {Path(path) / DEFAULT_FILENAMES[0]}",
            )
        if not candidate.is_file():
            raise DefinitionNotFoundError(
                f"definition file {str(path)!r} does not exist",
                hint="pass the path of your pipeline definition with -f, e.g. -f pipelinefile.py",
            )
        if candidate.suffix != ".py":
            raise DefinitionNotFoundError(
                f"definition file {str(path)!r} is not a Python file", hint="definitions are Python (.py) files"
            )
        return candidate.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for name in DEFAULT_FILENAMES:
            if (folder / name).is_file():
                return folder / name
        if (folder / ".git").exists():
            break
    shadow = here / "pipeline.py"
    hint = (
        "rename pipeline.py to pipelinefile.py: a pipeline.py would shadow the `pipeline` package"
        if shadow.is_file()
        else "create pipelinefile.py (see `pipeline init`), or pass -f FILE"
    )
    raise DefinitionNotFoundError(f"no {DEFAULT_FILENAMES[0]} in {here} or its parents", hint=hint)


def load(path: str | Path | None = None, *, check_files: bool = True) -> Loaded:
    """Import the definition, build and validate its pipeline; raise a located error otherwise."""
    file = find_definition(path)
    if file.name == "pipeline.py":
        raise DefinitionNotFoundError(
            f"{file} is named pipeline.py, which shadows the `pipeline` package when imported",
            hint="rename it to pipelinefile.py",
        )
    builders, module_specs = _import(file)
    candidates: list[tuple[PipelineSpec, dict[str, Location], Location | None]] = [
        (b.spec, b.locations, b.location) for b in builders
    ]
    known = {id(spec) for spec, _, _ in candidates}
    candidates += [(s, {}, None) for s in module_specs if id(s) not in known]
    if not candidates:
        raise DefinitionError(
            [Problem(f"no pipeline is defined in {file.name}", file=display_path(file))],
            hint='write `with Pipeline("my-service") as p:` and create stages inside the block',
        )
    if len(candidates) > 1:
        names = ", ".join(spec.name for spec, _, _ in candidates)
        raise DefinitionError(
            [Problem(f"{file.name} defines {len(candidates)} pipelines ({names}); one file holds one pipeline")],
            hint="split them into one definition file each and pass -f",
        )
    spec, locations, location = candidates[0]
    loaded = Loaded(spec=spec, file=file, locations=locations, location=location)
    if check_files:
        problems = missing_files(spec, loaded.root)
        if problems:
            raise DefinitionError(locate(problems, locations, location or (str(file), 0)), source=display_path(file))
    return loaded


def _import(file: Path) -> tuple[list[Pipeline], list[PipelineSpec]]:
    module_name = "_pipelinefile_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:  # pragma: no cover - only for non-.py paths, checked above
        raise DefinitionNotFoundError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    _check_readable(file)
    sys.path.insert(0, str(file.parent))
    sys.modules[module_name] = module
    # Reading a definition writes nothing into the user's repository: no __pycache__ beside the
    # definition or the modules it imports (validate and render --check promise to write nothing).
    wrote_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        with collect_pipelines() as builders, collecting_problems() as deferred, remembering_locations():
            try:
                spec.loader.exec_module(module)
            except DefinitionError:
                if not deferred:
                    raise
            if deferred:  # objects built with bad fields: every one of them at once
                raise DefinitionError(sorted(deferred, key=lambda p: (p.file or "", p.line or 0)))
    except DefinitionError as exc:
        raise DefinitionError(exc.problems, source=display_path(file), hint=exc.hint) from None
    except SystemExit as exc:
        where = _user_frame(exc, file)
        raise UserCodeError(
            f"{display_path(Path(where[0]))}:{where[1]}: the definition called sys.exit({exc.code!r})",
            hint="a definition only declares the pipeline; remove the exit (pipeline exits with its own codes)",
        ) from None
    except SyntaxError as exc:
        at = f"{display_path(Path(exc.filename or file))}:{exc.lineno}"
        code = (exc.text or "").rstrip()
        pointer = f"\n    {code}" if code else ""
        raise UserCodeError(f"{at}: syntax error: {exc.msg}{pointer}", hint="fix the syntax error") from None
    except ValidationError as exc:
        where = _user_frame(exc, file)
        title = exc.title
        problems = [
            Problem(p.message, f"{title}.{p.path}" if p.path else title, display_path(where[0]), where[1])
            for p in problems_from_validation(exc)
        ]
        raise DefinitionError(problems, source=display_path(file)) from None
    except Exception as exc:
        where = _user_frame(exc, file)
        code = linecache.getline(where[0], where[1]).strip() if where[1] else ""
        detail = f"\n    {code}" if code else ""
        raise UserCodeError(
            f"{display_path(Path(where[0]))}:{where[1]}: {type(exc).__name__}: {exc}{detail}",
            hint=f"the error is in your definition, not in pipeline; fix {file.name} line {where[1]}",
        ) from None
    finally:
        sys.dont_write_bytecode = wrote_bytecode
        sys.path.remove(str(file.parent))
        sys.modules.pop(module_name, None)
    specs = [v for v in vars(module).values() if isinstance(v, PipelineSpec)]
    return builders, specs


def _check_readable(file: Path) -> None:
    """The file can be read (an import error would blame a line of Python's own import machinery)."""
    try:
        with file.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise DefinitionNotFoundError(
            f"cannot read {display_path(file)}: {reason}",
            hint=f"check the file's permissions (ls -l {display_path(file)})",
        ) from None


def _user_frame(exc: BaseException, file: Path) -> tuple[str, int]:
    """The deepest traceback frame in the user's folder (their file or a helper module beside it)."""
    best: tuple[str, int] = (str(file), 0)
    folder = str(file.parent) + "/"
    for frame in traceback.extract_tb(exc.__traceback__):
        resolved = str(Path(frame.filename).resolve())
        mine = resolved == str(file) or (resolved.startswith(folder) and "/site-packages/" not in resolved)
        if mine and not _is_framework_file(resolved):
            best = (frame.filename, frame.lineno or 0)
    return best


def _is_framework_file(resolved: str) -> bool:
    package = str(Path(__file__).resolve().parent) + "/"
    stages_dir = str(Path(__file__).resolve().parent.parent / "stages") + "/"
    return resolved.startswith((package, stages_dir)) and "/_bundled/" not in resolved
