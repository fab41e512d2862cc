"""Offline requirements -> agents -> code: documented requirement kinds build into working pipelines."""

from __future__ import annotations

from typing import Any

import pytest

from tdev_common.llm import LLMClient, prompts
from tdev_common.llm.offline.codegen import generate
from tdev_common.llm.offline.planner import plan
from tdev_common.llm.offline.requirements import analyse_requirements
from tdev_common.llm.offline.rules import detect_steps
from tdev_common.llm.schemas import schema_for
from tests.llm.conftest import ClientFactory
from tests.llm.offline_helpers import load_agent

pytestmark = pytest.mark.mesh  # real servers or subprocesses

REQUIREMENTS = {
    "Count the words in a text and report the most frequent ones":
        ["tokenize_words", "word_frequency"],
    "Normalise whitespace, lowercase, then count characters":
        ["normalize_whitespace", "change_case", "count_characters"],
    "Given a list of numbers, compute the mean, median, min, max and standard deviation":
        ["statistics"],
    "Rename the field first_name to firstName, drop the password field and flatten nested objects":
        ["rename_fields", "drop_fields", "flatten_record"],
    "Filter out negative numbers, then compute the sum and the average":
        ["filter_numbers", "statistics"],
    "Parse CSV text and compute the average of the price column":
        ["parse_csv", "pluck_field", "statistics"],
    "Remove punctuation, lowercase the text, remove stopwords and report the 5 most common words":
        ["strip_punctuation", "change_case", "tokenize_words", "remove_stopwords", "word_frequency"],
    "Keep only the records where status is active, sort them by age and count records by city":
        ["filter_records", "sort_records", "count_by_field"],
    "Convert a list of temperatures from Celsius to Fahrenheit and round them to 1 decimal":
        ["convert_temperature", "round_numbers"],
    "Select only the name and email fields from each record":
        ["select_fields"],
    "Extract all email addresses from a text": ["extract_emails"],
    "Extract the numbers from a text and compute their sum": ["extract_numbers", "statistics"],
    "Remove duplicate words and sort the words alphabetically": ["tokenize_words", "deduplicate", "sort_items"],
    "Count the sentences and the words of a text": ["count_sentences", "count_words"],
    "Replace 'cat' with 'dog' in the text and convert it to uppercase": ["replace_text", "change_case"],
}


def _resolve(ref: str, workflow_input: dict[str, Any], outputs: dict[str, dict[str, Any]]) -> Any:
    parts = ref.split(".")
    return workflow_input[parts[1]] if parts[0] == "inputs" else outputs[parts[1]][parts[3]]


async def _plan(client: LLMClient, text: str) -> dict[str, Any]:
    result = await client.complete(prompts.agent_plan_messages(text), schema=schema_for("requirements", "plan"),
                                   purpose="requirements", max_tokens=4000, temperature=0.0)
    return dict(result.data)


@pytest.mark.parametrize("text", list(REQUIREMENTS))
async def test_requirement_builds_into_agents_that_pass_their_examples(make_client: ClientFactory, text: str) -> None:
    client = await make_client(keys=())
    planned = await _plan(client, text)
    assert [agent["id"] for agent in planned["agents"]] == REQUIREMENTS[text]
    agents = {}
    for index, spec in enumerate(planned["agents"]):
        assert len(spec["examples"]) >= 2
        if index % 2:  # without the hint the template is found from the spec's words, keys and examples
            spec = {k: v for k, v in spec.items() if k != "implementation"}
        generated = await client.complete(prompts.codegen_messages(spec), schema=schema_for("code_generation"),
                                          purpose="code_generation", max_tokens=4000, temperature=0.0)
        assert generated.data["class_name"] == spec["name"]
        agent = load_agent(generated.data["code"])
        assert agent.get_capabilities()["input_schema"] == spec["input_schema"]
        for example in spec["examples"]:
            assert agent.execute(example["input"]) == example["expected_output"]
        agents[spec["id"]] = agent
    for example in planned["examples"]:
        outputs: dict[str, dict[str, Any]] = {}
        for spec in planned["agents"]:
            node_input = {key: _resolve(ref, example["input"], outputs) for key, ref in spec["inputs"].items()}
            outputs[spec["id"]] = agents[spec["id"]].execute(node_input)
        final = {key: _resolve(ref, example["input"], outputs) for key, ref in planned["outputs"].items()}
        assert final == example["expected_output"]


@pytest.mark.parametrize("text", list(REQUIREMENTS))
def test_codegen_finds_the_template_without_the_offline_hint(text: str) -> None:
    for spec in plan(text)["agents"]:
        generated = generate({k: v for k, v in spec.items() if k != "implementation"})
        agent = load_agent(generated["code"])
        assert all(agent.execute(e["input"]) == e["expected_output"] for e in spec["examples"]), spec["id"]


async def test_word_frequency_plan_has_exact_wiring_and_examples(make_client: ClientFactory) -> None:
    client = await make_client(keys=())
    planned = await _plan(client, "Count the words in a text and report the 2 most frequent ones")
    tokenizer, frequency = planned["agents"]
    assert (tokenizer["name"], frequency["name"]) == ("WordTokenizer", "WordFrequencyCounter")
    assert frequency["inputs"] == {"words": "nodes.tokenize_words.output.words"}
    assert frequency["depends_on"] == ["tokenize_words"]
    assert planned["workflow_input_schema"] == {"type": "object", "required": ["text"],
                                             "properties": {"text": {"type": "string"}}}
    assert planned["outputs"] == {"word_count": "nodes.word_frequency.output.word_count",
                               "unique_words": "nodes.word_frequency.output.unique_words",
                               "top_words": "nodes.word_frequency.output.top_words"}
    assert planned["data_flow"][:2] == [{"from": "inputs.text", "to": "nodes.tokenize_words.inputs.text"},
                                     {"from": "nodes.tokenize_words.output.words",
                                      "to": "nodes.word_frequency.inputs.words"}]
    assert planned["examples"][1] == {
        "input": {"text": "Hello,   World! Hello again, world.\nIs this the real life? It is."},
        "expected_output": {"word_count": 12, "unique_words": 9,
                            "top_words": [{"word": "hello", "count": 2}, {"word": "is", "count": 2}]}}
    assert frequency["implementation"] == {"template": "word_frequency", "params": {"top_n": 2}}
    assert frequency["reuse"] is None


async def test_catalogue_agent_is_reused_when_it_matches(make_client: ClientFactory) -> None:
    client = await make_client(keys=())
    catalogue = [{"agent_id": "agent_3f9c", "version": "1.2.0", "name": "WordTokenizer", "description": "words",
                  "input_schema": {"required": ["text"]}, "output_schema": {"required": ["words"]}}]
    result = await client.complete(prompts.agent_plan_messages("Report the most common words", catalogue=catalogue),
                                   schema=schema_for("requirements", "plan"), purpose="requirements",
                                   max_tokens=4000, temperature=0.0)
    assert [a["reuse"] for a in result.data["agents"]] == [
        {"agent_id": "agent_3f9c", "version": "1.2.0", "name": "WordTokenizer"}, None]


def test_requirement_analysis_by_rules() -> None:
    result = analyse_requirements("Filter out negative numbers, then compute the sum and the average. "
                                  "It must be fast and must never fail on malformed input.")
    assert result["kind"] == "number_statistics"
    assert result["summary"] == "number statistics: filter_numbers -> statistics"
    assert result["functional_requirements"] == [
        {"id": "FR1", "description": "Keeps only the numbers at least 0.", "priority": "must"},
        {"id": "FR2", "description": "Computes the sum, mean of a list of numbers.", "priority": "must"},
        {"id": "FR3", "description": "Accept numbers as input and return sum, mean.", "priority": "must"}]
    assert [(n["id"], n["category"]) for n in result["non_functional_requirements"]] == [
        ("NFR1", "performance"), ("NFR2", "reliability"), ("NFR3", "determinism")]
    assert result["constraints"] == [
        "It must be fast and must never fail on malformed input.",
        "Agents use only the Python standard library and run in the sandbox (no network, no files)."]
    assert result["integration_points"] == [
        {"name": "numbers", "direction": "input", "description": "workflow input 'numbers' (a list of numbers)"},
        {"name": "sum", "direction": "output", "description": "workflow output 'sum'"},
        {"name": "mean", "direction": "output", "description": "workflow output 'mean'"}]
    assert result["assumptions"] == ["Statistics are rounded to 6 decimals; an empty list is an error."]


@pytest.mark.parametrize(("text", "expected"), [
    ("Sort the numbers in descending order", [("sort_items", {"key": "numbers", "descending": True})]),
    ("Order the numbers from largest to smallest", [("sort_items", {"key": "numbers", "descending": True})]),
    ("Keep only numbers greater than 10", [("filter_numbers", {"condition": "gt", "value": 10.0})]),
    ("Remove values below 3", [("filter_numbers", {"condition": "ge", "value": 3.0})]),
    ("Multiply each number by 3", [("transform_numbers", {"operation": "multiply", "operand": 3.0})]),
    ("Truncate the text to 20 characters", [("truncate_text", {"max_length": 20, "suffix": ""})]),
    ("Normalise the numbers to the range 0 to 1", [("normalize_numbers", {})]),
    ("Flatten nested objects using underscores", [("flatten_record", {"key": "record", "separator": "_"})]),
    ("Count characters excluding spaces", [("count_characters", {"mode": "non_whitespace"})]),
    ("Tell me the three most common letters", [("character_frequency", {"top_n": 3})]),
])
def test_rules_read_parameters_from_the_text(text: str, expected: list[tuple[str, dict[str, Any]]]) -> None:
    assert [(step.template, step.params) for step in detect_steps(text)] == expected
