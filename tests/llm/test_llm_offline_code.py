"""Offline code purposes: the template library, repair transforms, mutation/crossover and review."""

from __future__ import annotations

import ast

import pytest

from tdev_common.errors import InvalidArgument
from tdev_common.llm.offline.analysis import analyse
from tdev_common.llm.offline.mutation import crossover, mutate
from tdev_common.llm.offline.planner import plan
from tdev_common.llm.offline.repair import repair
from tdev_common.llm.offline.review import review
from tdev_common.llm.offline.samples import workflow_samples
from tdev_common.llm.offline.templates import TEMPLATES
from tests.llm.offline_helpers import load_agent

pytestmark = pytest.mark.unit  # no I/O


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_is_a_correct_agent(name: str) -> None:
    template = TEMPLATES[name]
    params = template.params()
    code = template.render(params)
    tree = ast.parse(code)
    [cls] = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    assert set(methods) == {"__init__", "execute", "get_capabilities"}
    assert [a.arg for a in methods["__init__"].args.args] == ["self"]
    agent = load_agent(code)
    capabilities = agent.get_capabilities()
    assert capabilities["template"] == name and capabilities["name"] == cls.name
    assert capabilities["input_schema"] == template.input_schema(params)
    keys = template.consumes(params)
    for sample in workflow_samples([], keys):
        try:
            expected = template.run(sample, params)
        except (ValueError, TypeError, KeyError):
            continue
        assert agent.execute(sample) == expected
    analysed = analyse(code)["capabilities"]
    assert analysed["input_schema"]["required"] == list(keys)
    assert review(code)["verdict"] == "approve"


def test_templates_specialise_parameters_into_readable_code() -> None:
    code = TEMPLATES["rename_fields"].render({"key": "records", "mapping": {"a": "b"}})
    assert "self.mapping = {'a': 'b'}" in code
    assert "data = inputs['records']" in code
    assert "if 'records' == 'records'" not in code and "key" not in code.split("def execute")[1].split("def get_")[0]


AGENT = '''"""Word stats."""


class WordStats:
    """Counts words."""

    def execute(self, inputs: dict) -> dict:
        """Counts."""
        text = inputs["content"]
        words = re.findall(r"\\w+", text)
        return {"count": len(words), "mean_length": sum(len(w) for w in words) / len(words)}

    def get_capabilities(self) -> dict:
        """Caps."""
        return {}
'''
SPEC = {"name": "WordStats", "purpose": "Counts the words of the text.",
        "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
        "output_schema": {"type": "object", "required": ["word_count", "mean_length"],
                          "properties": {"word_count": {"type": "integer"}, "mean_length": {"type": "number"}}}}


def test_repair_renames_a_misnamed_input_key_to_the_specs() -> None:
    result = repair(AGENT, {"kind": "exception", "exception_type": "KeyError", "message": "'content'"}, SPEC)
    assert result["changed"] is True
    assert result["fixes"] == [{"kind": "input_key_rename", "line": 9,
                                "description": "read input 'text' (the spec's name) instead of 'content'"}]
    assert result["code"] == AGENT.replace('inputs["content"]', "inputs['text']")


def test_repair_defaults_a_missing_optional_input() -> None:
    spec = {**SPEC, "input_schema": {"type": "object", "properties": {"content": {"type": "string"}}}}
    result = repair(AGENT, {"kind": "exception", "exception_type": "KeyError", "message": "'content'"}, spec)
    assert "text = inputs.get('content', '')" in result["code"]
    assert result["fixes"][0]["kind"] == "missing_input_default"


def test_repair_adds_a_missing_standard_import() -> None:
    result = repair(AGENT, {"kind": "exception", "exception_type": "NameError",
                            "message": "name 're' is not defined"})
    assert result["code"] == AGENT.replace('"""Word stats."""\n', '"""Word stats."""\nimport re\n')
    assert result["fixes"] == [{"kind": "add_import", "description": "added `import re`", "line": None}]


def test_repair_guards_the_failing_division() -> None:
    traceback = 'Traceback (most recent call last):\n  File "<agent>", line 11, in execute\nZeroDivisionError'
    result = repair(AGENT, {"kind": "exception", "exception_type": "ZeroDivisionError",
                            "message": "division by zero", "traceback": traceback})
    assert '"mean_length": ((sum(len(w) for w in words)) / (len(words)) if (len(words)) else 0.0)' \
        in result["code"]


def test_repair_renames_wrong_output_keys() -> None:
    failure = {"kind": "wrong_output", "input": {"content": "a bb"},
               "expected_output": {"word_count": 2, "mean_length": 1.5},
               "actual_output": {"count": 2, "mean_length": 1.5}}
    result = repair(AGENT, failure, SPEC)
    assert '{"word_count": len(words), "mean_length"' in result["code"].replace("'word_count'", '"word_count"')
    assert result["fixes"][0]["description"] == "renamed output keys: 'count' -> 'word_count'"


def test_repair_reinstantiates_the_template_for_a_known_spec() -> None:
    spec = plan("Count the words of a text")["agents"][0]
    broken = spec_code = TEMPLATES["count_words"].render(TEMPLATES["count_words"].params())
    broken = spec_code.replace("return {'word_count': len(", "return {'word_count': 1 + len(")
    failure = {"kind": "wrong_output", "expected_output": {"word_count": 9}, "actual_output": {"word_count": 10}}
    result = repair(broken, failure, spec)
    assert result["fixes"][0]["kind"] == "template_reinstantiation"
    agent = load_agent(result["code"])
    assert all(agent.execute(e["input"]) == e["expected_output"] for e in spec["examples"])


def test_repair_says_so_when_nothing_applies() -> None:
    result = repair(AGENT, {"kind": "timeout"})
    assert (result["changed"], result["fixes"], result["code"]) == (False, [], AGENT)
    assert result["diagnosis"].startswith("the code did not finish in time")


def test_repair_fixes_the_contract() -> None:
    code = "class A:\n    def __init__(self, size):\n        self.size = size\n\n    def execute(self, inputs):\n" \
           "        return {'n': 1}\n"
    result = repair(code, {"kind": "contract", "message": "__init__() missing 1 required positional argument"})
    agent = load_agent(result["code"])
    assert agent.size is None and agent.get_capabilities()["name"] == "A"


FILTER = TEMPLATES["filter_numbers"].render({"condition": "gt", "value": 10.0})


def test_mutation_is_seeded_and_deterministic() -> None:
    first, again, other = mutate(FILTER, seed=1, rate=0.2), mutate(FILTER, seed=1, rate=0.2), mutate(FILTER, seed=2)
    assert first == again and first["code"] != other["code"]
    assert first["operations"][0] == {"kind": "constant_perturbation", "line": 10, "before": "10.0", "after": "9.0",
                                      "description": "constant perturbation at line 10: 10.0 -> 9.0"}
    assert first["seed"] == 1
    ast.parse(first["code"])
    patched = FILTER
    for edit in first["edits"]:
        assert patched.count(edit["search"]) == 1
        patched = patched.replace(edit["search"], edit["replace"], 1)
    assert patched == first["code"]
    changed = [a != b for a, b in zip(FILTER.splitlines(), first["code"].splitlines(), strict=True)]
    assert sum(changed) == len({op["line"] for op in first["operations"]})


def test_mutation_leaves_capabilities_and_docstrings_alone() -> None:
    for seed in range(20):
        result = mutate(FILTER, seed=seed, rate=1.0, max_edits=50)
        assert all(op["line"] < 20 for op in result["operations"])
        assert load_agent(FILTER).get_capabilities() == load_agent(result["code"]).get_capabilities()


def test_crossover_takes_methods_from_the_second_parent() -> None:
    other = TEMPLATES["filter_numbers"].render({"condition": "lt", "value": 3.0})
    child = crossover(FILTER, other, seed=0)
    assert child["operations"] == [{"kind": "crossover", "line": 12,
                                    "description": "method execute taken from the second parent"}]
    agent = load_agent(child["code"])  # the first parent's threshold, the second parent's comparison
    assert agent.value == 10.0 and agent.execute({"numbers": [1, 5, 20]}) == {"numbers": [1, 5]}
    assert crossover(FILTER, other, seed=0) == child
    [edit] = child["edits"]
    assert FILTER.replace(edit["search"], edit["replace"]) == child["code"]
    with pytest.raises(InvalidArgument):
        crossover("x = (", other, seed=0)


def test_review_rejects_unsafe_and_requests_changes_for_spec_gaps() -> None:
    unsafe = AGENT.replace('text = inputs["content"]', 'text = eval(inputs["content"])')
    assert review(unsafe)["verdict"] == "reject"
    result = review(AGENT, SPEC)
    assert result["verdict"] == "request_changes"
    assert [f["message"] for f in result["findings"] if f["severity"] == "error"] == [
        "reads input 'content', which the spec does not provide",
        "never returns output 'word_count', which the spec requires"]
    assert review("def broken(:\n")["verdict"] == "reject"
