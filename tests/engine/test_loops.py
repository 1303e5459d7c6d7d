"""Fan-out: items, `{{item}}` values, child node names and output aggregation, as Argo v3.7 implements them.

Sources: workflow/controller/dag.go expandTask (EXPAND), operator.go processItem / generateNodeName (ITEM),
operator.go expandSequence (SEQ), operator.go processAggregateNodeOutputs (AGG; PR #7517 "only aggregates
output from successful nodes", issue #13510: results are embedded as JSON, parameters as strings),
pkg/apis/workflow/v1alpha1/item.go Item.String/GetType (ITEMGO), docs/walk-through/loops.md (LOOPS),
hash/fnv New32a used by Workflow.NodeID (FNV).
"""

from __future__ import annotations

import json

import pytest

from kai_flows.argo.names import fnv32a
from kai_flows.engine.loops import (
    LoopError,
    aggregate_outputs,
    child_node_name,
    expand_items,
    expand_sequence,
    item_scope,
    should_expand,
)

# ------------------------------------------------------------------------------------------------ items


def test_with_items_of_scalars():
    items = ["hello world", 2, 1.0, 2.5, True]
    assert expand_items(items, None, None) == items
    # ITEMGO Item.String(): JSON with a string's quotes cut off; YAML's 1.0 reaches Argo as JSON 1
    assert [item_scope(i) for i in items] == [
        {"item": "hello world"}, {"item": "2"}, {"item": "1"}, {"item": "2.5"}, {"item": "true"}]
    # ITEM generateNodeName: "<name>(<index>:<item>)"
    names = [child_node_name("wf.resize", i, item) for i, item in enumerate(items)]
    assert names == ["wf.resize(0:hello world)", "wf.resize(1:2)", "wf.resize(2:1)", "wf.resize(3:2.5)",
                     "wf.resize(4:true)"]


def test_with_items_of_maps():
    item = {"name": "jesse", "group": "developer", "size": 2}
    scope = item_scope(item)
    # ITEM: item.<key> per field; {{item}} is the map as json.Marshal writes it (sorted keys, compact)
    assert scope == {"item.name": "jesse", "item.group": "developer", "item.size": "2",
                     "item": '{"group":"developer","name":"jesse","size":2}'}
    # ITEM: "For example if the item is: {"name": "jesse","group":"developer"} ... the step name
    # (group:developer,name:jesse)" - sorted key:value pairs
    assert child_node_name("wf.t", 0, item) == "wf.t(0:group:developer,name:jesse,size:2)"


def test_with_items_of_lists():
    # ITEM: a list item is its JSON for {{item}}; %v of []Item prints "[a b]"
    assert item_scope([1, "a"]) == {"item": '[1,"a"]'}
    assert child_node_name("wf.t", 1, [1, "a"]) == "wf.t(1:[1 a])"


def test_parentheses_are_dropped_from_node_names():
    # ITEM generateNodeName: strings.ReplaceAll of "(" and ")" in the description
    assert child_node_name("wf.t", 2, "f(x)") == "wf.t(2:fx)"
    assert item_scope("f(x)") == {"item": "f(x)"}


def test_string_item_keeps_its_json_escapes():
    # ITEMGO String(): only the outer quotes are cut from the JSON, so inner escapes stay; Fix undoes <>&.
    assert item_scope('say "hi"') == {"item": 'say \\"hi\\"'}
    assert item_scope("a<b & c") == {"item": "a<b & c"}


def test_with_param_json_list():
    items = expand_items(None, '["a", 1.50, {"k": "v"}, [1, 2], true]', None)
    assert [item_scope(i)["item"] for i in items] == ["a", "1.50", '{"k":"v"}', "[1,2]", "true"]
    # ITEMGO: Item holds the raw JSON, so 1.50 keeps its text
    assert child_node_name("wf.t", 1, items[1]) == "wf.t(1:1.50)"


@pytest.mark.parametrize("param", ['{"a": 1}', '"abc"', "a, b", "[1, 2", "NaN"])
def test_with_param_must_be_a_json_list(param):
    # EXPAND: "withParam value could not be parsed as a JSON list: %s"
    with pytest.raises(LoopError, match="withParam value could not be parsed as a JSON list"):
        expand_items(None, param, None)


@pytest.mark.parametrize("param", ["[]", " [ ] ", "null"])
def test_with_param_empty_list(param):
    # EXPAND: an empty list gives no children (the task node is Skipped, "Skipped, empty params");
    # Go's json.Unmarshal of null into a slice yields an empty one.
    assert expand_items(None, param, None) == []


def test_should_expand():
    # DAGTask.ShouldExpand: len(withItems) != 0 || withParam != "" || withSequence != nil
    assert should_expand(["a"], None, None)
    assert should_expand(None, "[]", None)
    assert should_expand(None, None, {"count": "0"})
    assert not should_expand([], "", None)


def test_inputs_are_not_modified():
    items = [{"a": 1}]
    expand_items(items, None, None).append("x")
    assert items == [{"a": 1}]


# ------------------------------------------------------------------------------------------------ withSequence


@pytest.mark.parametrize(("seq", "expected"), [
    ({"count": "3"}, ["0", "1", "2"]),  # LOOPS: count from start (default 0)
    ({"start": "5", "count": 2}, ["5", "6"]),
    ({"start": 2, "end": 4}, ["2", "3", "4"]),
    ({"start": "5", "end": "2"}, ["5", "4", "3", "2"]),  # SEQ: start > end counts down
    ({"start": 1, "end": 3, "format": "img-%02d"}, ["img-01", "img-02", "img-03"]),
    ({"count": 0}, []),
])
def test_with_sequence(seq, expected):
    assert expand_items(None, None, seq) == expected
    assert expand_sequence(seq) == expected


@pytest.mark.parametrize(("seq", "message"), [
    ({"count": 2, "end": 3}, "only one of count or end"),  # validate.go
    ({"start": 1}, "neither end nor count"),  # SEQ
    ({"count": "two"}, "not an integer"),
])
def test_bad_sequence(seq, message):
    with pytest.raises(LoopError, match=message):
        expand_sequence(seq)


# ------------------------------------------------------------------------------------------------ aggregation


def test_aggregation_keeps_succeeded_children_in_index_order():
    children = [
        (2, "Succeeded", {"mesh": "c.glb", "faces": "30"}, '{"faces": 30}'),
        (0, "Succeeded", {"mesh": "a.glb", "faces": "10"}, "plain text"),
        (1, "Failed", {"mesh": "b.glb", "faces": "20"}, '{"faces": 20}'),  # AGG: only Succeeded children
        (3, "Succeeded", {"mesh": "d.glb", "faces": "40"}, "[1, 2.50]"),
    ]
    scope = aggregate_outputs("simplify", children)
    assert json.loads(scope["tasks.simplify.outputs.parameters.mesh"]) == ["a.glb", "c.glb", "d.glb"]
    # AGG + #13510: parameter values stay strings, even when they are JSON
    assert json.loads(scope["tasks.simplify.outputs.parameters.faces"]) == ["10", "30", "40"]
    assert json.loads(scope["tasks.simplify.outputs.parameters"]) == [
        {"mesh": "a.glb", "faces": "10"}, {"mesh": "c.glb", "faces": "30"}, {"mesh": "d.glb", "faces": "40"}]
    # results are embedded as JSON when they parse (compacted, number text kept), as strings otherwise
    assert scope["tasks.simplify.outputs.result"] == '["plain text",{"faces":30},[1,2.50]]'


def test_aggregation_of_no_children_adds_nothing():
    # AGG: `if len(childNodes) == 0 { return nil }`
    assert aggregate_outputs("t", []) == {}


def test_aggregation_when_every_child_failed():
    scope = aggregate_outputs("t", [(0, "Failed", {"p": "x"}, "r"), (1, "Error", {"p": "y"}, None)])
    assert scope == {"tasks.t.outputs.result": "[]", "tasks.t.outputs.parameters": "[]"}


def test_aggregated_strings_are_go_json():
    # encoding/json escapes <, >, & in strings
    scope = aggregate_outputs("t", [(0, "Succeeded", {"p": "a<b"}, None)])
    assert scope["tasks.t.outputs.parameters.p"] == '["a\\u003cb"]'
    assert json.loads(scope["tasks.t.outputs.parameters.p"]) == ["a<b"]


# ------------------------------------------------------------------------------------------------ node ids


@pytest.mark.parametrize(("text", "value"), [("", 0x811C9DC5), ("a", 0xE40C292C), ("foobar", 0xBF9CF968)])
def test_fnv32a_reference_vectors(text, value):
    # FNV: published FNV-1a 32-bit test vectors
    assert fnv32a(text) == value
