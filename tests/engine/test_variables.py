"""`{{...}}` substitution, with expected outcomes from Argo v3.7's implementation.

Sources: util/template/simple_template.go simpleReplace (SIMPLE), util/template/expression_template.go
expressionReplace (EXPR), util/template/template.go + valyala/fasttemplate (SCAN), util/expr/env/env.go and
util/expand/expand.go (ENV), docs/variables.md (VARS), and expr-lang's documented semantics (EXPRLANG).
"""

from __future__ import annotations

import json

import pytest

from kai_flows.engine.expressions import ExpressionError
from kai_flows.engine.variables import (
    UnresolvedVariable,
    evaluate_expression,
    expand_scope,
    find_tags,
    go_json,
    substitute,
    substitute_obj,
)

SCOPE = {
    "inputs.parameters.max-size": "1600",
    "inputs.parameters.mode": "fast",
    "inputs.parameters.n": "3",
    "inputs.parameters.path": 's3://b/with "quotes"\nand a newline',
    "workflow.name": "recon-abc12",
    "item": "x",
    "inputs.parameters.x": "value-of-x",
    "tasks.scan.outputs.result": '{"count": 12, "names": ["a", "b"]}',
}


# ------------------------------------------------------------------------------------------------ simple tags


def test_simple_tags_and_spaces_inside_braces():
    # SIMPLE: replaceMap[strings.TrimSpace(tag)]
    assert substitute("--size={{inputs.parameters.max-size}}", SCOPE) == "--size=1600"
    assert substitute("{{ workflow.name }}/{{inputs.parameters.mode  }}", SCOPE) == "recon-abc12/fast"


def test_values_are_inserted_verbatim():
    # SIMPLE strconv.Quote-escapes the value into the JSON text, which decodes back to the value itself.
    assert substitute("{{inputs.parameters.path}}", SCOPE) == SCOPE["inputs.parameters.path"]


def test_unknown_tag_raises_unresolved_variable():
    # SIMPLE: errors.Errorf(CodeBadRequest, "failed to resolve {{%s}}", tag)
    with pytest.raises(UnresolvedVariable) as info:
        substitute("a {{inputs.parameters.nope}} b", SCOPE)
    assert isinstance(info.value, KeyError)
    assert "failed to resolve {{inputs.parameters.nope}}" in str(info.value)
    assert info.value.tag == "inputs.parameters.nope"


def test_allowed_prefix_stays_as_written():
    # SIMPLE with allowUnresolved: `fmt.Fprintf(w, "{{%s}}", tag)` (the tag as written, spaces included)
    text = "{{ workflow.outputs.parameters.x }} and {{item.name}}"
    out = substitute(text, SCOPE, allow_unresolved=["workflow.outputs.", "item"])
    assert out == text
    with pytest.raises(UnresolvedVariable):
        substitute("{{item.name}}", SCOPE, allow_unresolved=["workflow.outputs."])


def test_nested_tag_resolves_the_inner_one_per_pass():
    # SCAN: the tag ends at the first "}}", so the tag is "inputs.parameters.{{item"; SIMPLE then resolves the
    # nested "item" and writes "{{" + prefix + value; the trailing "}}" is plain text. A second pass finishes it.
    once = substitute("{{inputs.parameters.{{item}}}}", SCOPE)
    assert once == "{{inputs.parameters.x}}"
    assert substitute(once, SCOPE) == "value-of-x"


def test_unclosed_tag_is_an_error():
    # SCAN: fasttemplate.NewTemplate fails with "Cannot find end tag"
    with pytest.raises(ExpressionError, match="end tag"):
        substitute("echo {{inputs.parameters.mode", SCOPE)


def test_text_without_tags_is_unchanged():
    assert substitute("plain { text } with } braces", SCOPE) == "plain { text } with } braces"


def test_find_tags():
    assert find_tags("a {{ x.y }} b {{=asInt(n)}} {{p.{{item}}}}") == ["x.y", "=asInt(n)", "p.{{item"]


def test_substitute_obj_substitutes_keys_and_values_not_structure():
    # Argo substitutes the JSON text of the whole task (dag.go resolveDependencyReferences: json.Marshal,
    # template.Replace, json.Unmarshal), so keys are substituted and a value with quotes stays one string.
    obj = {"name": "{{workflow.name}}", "{{inputs.parameters.mode}}": ["{{inputs.parameters.path}}", 3, True, None]}
    out = substitute_obj(obj, SCOPE)
    assert out == {"name": "recon-abc12", "fast": [SCOPE["inputs.parameters.path"], 3, True, None]}
    assert obj["name"] == "{{workflow.name}}"  # the input is untouched


# ------------------------------------------------------------------------------------------------ expressions


@pytest.mark.parametrize(("text", "expected"), [
    # VARS: hyphenated names must be indexed
    ("{{=inputs.parameters['max-size']}}", "1600"),
    ("{{=inputs.parameters['mode'] == 'fast'}}", "true"),  # EXPR: json.Marshal(true) -> true
    ("{{=inputs.parameters.mode != \"fast\"}}", "false"),
    ("{{=asInt(inputs.parameters.n) + 1}}", "4"),  # ENV: asInt is expr's int()
    ("{{=asFloat(inputs.parameters.n) / 2}}", "1.5"),
    ("{{=asFloat('2')}}", "2"),  # EXPR: json.Marshal(float64(2)) is "2"
    ("{{=asInt(inputs.parameters['max-size']) > 1000 ? 'big' : 'small'}}", "big"),
    ("{{=inputs.parameters.mode in ['fast', 'slow']}}", "true"),
    ("{{=inputs.parameters.n == 3}}", "false"),  # EXPRLANG: a string never equals an int
    ("{{=inputs.parameters.n == '3' && !(inputs.parameters.mode == 'slow')}}", "true"),
    ("{{='prefix-' + workflow.name}}", "prefix-recon-abc12"),
    ("{{=toJson({'b': 1, 'a': [true, 'x<y']})}}", '{"a":[true,"x\\u003cy"],"b":1}'),  # Go json.Marshal
    ("{{=jsonpath(tasks.scan.outputs.result, '$.names[1]')}}", "b"),
    ("{{=jsonpath(tasks.scan.outputs.result, '$.count')}}", "12"),
    ("{{=string(asInt(inputs.parameters.n) * 2)}}", "6"),
    ("{{=inputs.parameters.mode startsWith 'fa'}}", "true"),
    ("{{=inputs.parameters.missing ?? 'default'}}", "default"),
    ("size {{=inputs.parameters['max-size']}} on {{workflow.name}}", "size 1600 on recon-abc12"),
])
def test_expressions(text, expected):
    assert substitute(text, SCOPE) == expected


def test_expression_reading_an_unknown_name_is_unresolved():
    with pytest.raises(UnresolvedVariable) as info:
        substitute("{{=asInt(inputs.parameters.nope)}}", SCOPE)
    assert info.value.tag == "inputs.parameters.nope"
    with pytest.raises(UnresolvedVariable):
        substitute("{{=steps.a.outputs.result}}", SCOPE)


def test_expression_with_allowed_prefix_stays_as_written():
    # EXPR with allowUnresolved: the tag is written back unchanged when a variable it needs is not in env.
    text = "{{=asInt(workflow.outputs.parameters.count) + 1}}"
    assert substitute(text, SCOPE, allow_unresolved=["workflow.outputs."]) == text


@pytest.mark.parametrize("text", ["{{=1 +}}", "{{=asInt('x1')}}", "{{='a' < 1}}", "{{=nosuchfn(1)}}",
                                  "{{=inputs.parameters.mode && true}}"])
def test_bad_expressions_raise_expression_error(text):
    with pytest.raises(ExpressionError) as info:
        substitute(text, SCOPE)
    assert "\n" not in str(info.value)


def test_expression_env_drops_less_specific_keys():
    # ENV util/expand removeConflicts: {"a.b": 1, "a": 2} keeps the more specific key (expand_test.go).
    env = expand_scope({"a.b": "1", "a": "2", "a.c.d": "3", "ab": "4"})
    assert env == {"a": {"b": "1", "c": {"d": "3"}}, "ab": "4"}
    scope = {"tasks.t.outputs.parameters": '[{"p": "1"}]', "tasks.t.outputs.parameters.p": '["1"]'}
    assert substitute("{{=tasks.t.outputs.parameters.p}}", scope) == '["1"]'
    # the simple form still sees both keys
    assert substitute("{{tasks.t.outputs.parameters}}", scope) == '[{"p": "1"}]'


def test_evaluate_expression_returns_typed_values():
    env = expand_scope(SCOPE)
    assert evaluate_expression("asInt(inputs.parameters.n) * 2", env) == 6
    assert evaluate_expression("[1, 2][-1]", env) == 2  # EXPRLANG: negative indexes count from the end
    assert evaluate_expression("len(inputs.parameters.mode)", env) == 4


def test_go_json_matches_go():
    # encoding/json: sorted keys, compact, <>& escaped, float64 in Go's shortest form
    assert go_json({"b": 1.0, "a": [1e21, 1e-7, 0.5, "a&b"]}) == '{"a":[1e+21,1e-7,0.5,"a\\u0026b"],"b":1}'
    assert json.loads(go_json({"k": "é\n"})) == {"k": "é\n"}
