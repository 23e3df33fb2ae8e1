"""The stage DAG: deterministic order, parallel groups, ancestry, cycles (graphlib)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter


class Graph:
    """Edges point from a stage to the stages it needs. Order is stable: ties break by declaration."""

    def __init__(self, needs: Mapping[str, Sequence[str]]) -> None:
        self.needs = {name: tuple(deps) for name, deps in needs.items()}
        self._index = {name: i for i, name in enumerate(self.needs)}

    def find_cycle(self) -> list[str] | None:
        try:
            TopologicalSorter(self.needs).prepare()
        except CycleError as exc:
            # graphlib lists each node before the node that needs it; reverse to read "a needs b".
            body = list(reversed(exc.args[1]))[:-1]
            # Start at the earliest-declared stage so the message is stable.
            start = min(range(len(body)), key=lambda i: self._index.get(body[i], 0))
            body = body[start:] + body[:start]
            return [*body, body[0]]
        return None

    def levels(self) -> list[list[str]]:
        """Groups that may run in parallel, in order; each group sorted by declaration."""
        sorter = TopologicalSorter(self.needs)
        sorter.prepare()
        result: list[list[str]] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=self._index.__getitem__)
            result.append(ready)
            sorter.done(*ready)
        return result

    def order(self) -> list[str]:
        """One deterministic topological order: stages in declaration order as soon as they are ready."""
        done: set[str] = set()
        result: list[str] = []
        pending = list(self.needs)
        while pending:
            for name in pending:
                if all(dep in done for dep in self.needs[name]):
                    result.append(name)
                    done.add(name)
                    pending.remove(name)
                    break
            else:  # pragma: no cover - cycles are rejected before anyone asks for an order
                raise ValueError(f"cycle among {pending}")
        return result

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.needs.get(name, ()))
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.needs.get(current, ()))
        return seen

    def descendants(self, name: str) -> set[str]:
        return {other for other in self.needs if name in self.ancestors(other)}

    def dependents(self, name: str) -> list[str]:
        """Stages that need `name` directly."""
        return [other for other, deps in self.needs.items() if name in deps]

    def closure(self, names: Iterable[str]) -> list[str]:
        """`names` plus every ancestor, in order."""
        wanted = set(names)
        for name in list(wanted):
            wanted |= self.ancestors(name)
        return [n for n in self.order() if n in wanted]
