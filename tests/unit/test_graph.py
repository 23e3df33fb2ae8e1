from __future__ import annotations

from pipeline.graph import Graph


def test_order_is_deterministic_and_follows_declaration_among_ready_stages() -> None:
    g = Graph({"a": [], "c": ["a"], "b": ["a"], "d": ["b", "c"]})
    assert g.order() == ["a", "c", "b", "d"]
    assert g.levels() == [["a"], ["c", "b"], ["d"]]


def test_cycle_is_reported_starting_at_the_earliest_declared_stage() -> None:
    g = Graph({"x": [], "a": ["c"], "b": ["a"], "c": ["b"]})
    assert g.find_cycle() == ["a", "c", "b", "a"]
    assert Graph({"a": []}).find_cycle() is None


def test_ancestors_descendants_closure() -> None:
    g = Graph({"a": [], "b": ["a"], "c": ["b"], "d": []})
    assert g.ancestors("c") == {"a", "b"}
    assert g.descendants("a") == {"b", "c"}
    assert g.dependents("a") == ["b"]
    assert g.closure(["c"]) == ["a", "b", "c"]


def test_large_graph_orders_quickly_and_correctly() -> None:
    needs = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(300)}
    order = Graph(needs).order()
    assert order == [f"s{i}" for i in range(300)]
