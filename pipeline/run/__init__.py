"""Running a pipeline: plan (keys, up-to-date checks, preflight), apply (stages in DAG order,
recorded as they go), recover (runs that died), report (options, summary, progress)."""

from pipeline.run.report import NullReporter, Reporter, RunOptions, RunSummary
from pipeline.run.runner import Runner

__all__ = ["NullReporter", "Reporter", "RunOptions", "RunSummary", "Runner"]
