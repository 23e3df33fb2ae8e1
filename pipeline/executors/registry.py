"""Executors by stage kind: each kind names its executor as 'module:Class' (`Stage.executor`),
imported here only when a run needs it, so a definition can be loaded, validated and rendered
without any executor (or Docker, boto3, testinfra) being imported."""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.errors import NotImplementedStageError, StageKindRegistryError
from pipeline.executors.base import Executor
from pipeline.model import Stage


def executor_class(kind: type[Stage]) -> type[Executor[Any]]:
    """The executor class of a stage kind (NotImplementedStageError if it names none)."""
    path = kind.executor
    if not path:
        raise NotImplementedStageError(
            f"stage kind {kind.model_fields['kind'].default!r} has no executor",
            hint="this stage kind can be rendered for CI but not run; see the README's stage table",
        )
    module_name, _, attr = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise StageKindRegistryError(
            f"the executor of stage kind {kind.model_fields['kind'].default!r} ({path}) cannot be loaded: {exc}",
            hint="reinstall the package that provides the stage kind",
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise StageKindRegistryError(f"{path} is not a pipeline Executor (pipeline.executors.base.Executor)")
    return cls


def executor_for(stage: Stage) -> Executor[Any]:
    """A fresh executor for one stage (one instance per stage per run)."""
    return executor_class(type(stage))(stage)
