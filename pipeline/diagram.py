"""The stage graph as text, Mermaid or Graphviz dot (for `pipeline graph`)."""

from __future__ import annotations

from typing import Literal

from pipeline.spec import PipelineSpec

GraphFormat = Literal["text", "mermaid", "dot"]


def _label(spec: PipelineSpec, name: str) -> str:
    stage = spec.stage(name)
    extras = []
    env = spec.environment_of(stage)
    if env is not None:
        extras.append(f"env {env.name}")
    if spec.approval_of(stage) is not None:
        extras.append("approval")
    if type(stage).always:
        extras.append("always")
    if stage.branches:
        extras.append("only " + ",".join(stage.branches))
    return f"{name} [{stage.kind}]" + (f" ({'; '.join(extras)})" if extras else "")


def text(spec: PipelineSpec) -> str:
    """One line per parallel group, in order; each stage shows what it needs."""
    lines = [f"pipeline {spec.name}"]
    for number, group in enumerate(spec.graph.levels(), start=1):
        parallel = "  (parallel)" if len(group) > 1 else ""
        lines.append(f"{number}.{parallel}")
        for name in group:
            needs = spec.stage(name).needs
            after = f"  <- {', '.join(needs)}" if needs else ""
            lines.append(f"   {_label(spec, name)}{after}")
    return "\n".join(lines) + "\n"


def mermaid(spec: PipelineSpec) -> str:
    lines = ["flowchart LR"]
    for stage in spec.stages:
        shape = ("{{", "}}") if spec.approval_of(stage) is not None else ("[", "]")
        lines.append(f'    {_node(stage.name)}{shape[0]}"{_label(spec, stage.name)}"{shape[1]}')
    for stage in spec.stages:
        for dep in stage.needs:
            arrow = "-.->" if type(stage).always else "-->"
            lines.append(f"    {_node(dep)} {arrow} {_node(stage.name)}")
    return "\n".join(lines) + "\n"


def dot(spec: PipelineSpec) -> str:
    lines = [f'digraph "{spec.name}" {{', "    rankdir=LR;", "    node [shape=box];"]
    for stage in spec.stages:
        attrs = [f'label="{_label(spec, stage.name)}"']
        if spec.approval_of(stage) is not None:
            attrs.append("shape=hexagon")
        lines.append(f'    "{stage.name}" [{", ".join(attrs)}];')
    for stage in spec.stages:
        for dep in stage.needs:
            style = " [style=dashed]" if type(stage).always else ""
            lines.append(f'    "{dep}" -> "{stage.name}"{style};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node(name: str) -> str:
    return name.replace("-", "_")


def draw(spec: PipelineSpec, fmt: GraphFormat) -> str:
    return {"text": text, "mermaid": mermaid, "dot": dot}[fmt](spec)
