"""Offline static analysis: exact capabilities and quality facts from ast."""

from __future__ import annotations

import pytest

from tdev_common.errors import InvalidArgument
from tdev_common.llm.offline.analysis import analyse

pytestmark = pytest.mark.mesh  # real servers or subprocesses

AGENT = '''"""Summarises texts."""

import re
from collections import Counter


class TextSummary:
    """Counts words and reports the longest one."""

    def __init__(self, limit: int = 3) -> None:
        self.limit = limit

    def execute(self, inputs: dict) -> dict:
        """Reads text (required), top (optional) and returns counts."""
        text = inputs["text"]
        top = inputs.get("top", 2)
        words = re.findall(r"\\w+", text.lower())
        if not words:
            return {"word_count": 0, "longest": "", "top": []}
        counts = Counter(words)
        for word in words:
            if len(word) > 20 and word.isalpha():
                raise ValueError("word too long")
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        return {"word_count": len(words), "longest": max(words, key=len), "top": ranked[:top],
                "ratio": len(counts) / len(words)}

    def get_capabilities(self) -> dict:
        """Capabilities."""
        return {"description": "Counts words."}
'''


def test_analysis_reads_inputs_outputs_imports_and_complexity() -> None:
    result = analyse(AGENT)
    capabilities = result["capabilities"]
    assert result["agent_class"] == "TextSummary"
    assert capabilities["summary"] == "Counts words and reports the longest one."
    assert capabilities["input_schema"] == {
        "type": "object", "required": ["text"],
        "properties": {"text": {"type": "string"}, "top": {"type": "integer", "default": 2}}}
    assert capabilities["output_schema"] == {
        "type": "object", "required": ["word_count", "longest", "top"],
        "properties": {"word_count": {"type": "integer"}, "longest": {"type": "string"}, "top": {"type": "array"},
                       "ratio": {"type": "number"}}}
    assert capabilities["dependencies"] == ["collections", "re"]
    assert capabilities["estimated_performance"] == {"time_complexity": "O(n log n)", "cyclomatic_complexity": 5,
                                                     "max_loop_depth": 1, "lines_of_code": 24}
    assert capabilities["confidence"] == 0.9
    functions = {f["name"]: f for f in result["structure"]["functions"]}
    assert functions["execute"]["complexity"] == 5
    assert functions["__init__"]["args"] == [{"name": "limit", "annotation": "int"}]
    assert result["structure"]["inputs_read"] == [
        {"key": "text", "required": True, "type": "string", "line": 15},
        {"key": "top", "required": False, "type": "integer", "line": 16, "default": 2}]
    quality = result["quality"]
    assert (quality["documentation"], quality["type_hints"], quality["max_complexity"]) == (1.0, 1.0, 5)
    assert quality["issues"] == []
    assert quality["score"] == 1.0


def test_analysis_flags_unsafe_untyped_undocumented_code() -> None:
    code = "import subprocess\n\nclass Bad:\n    def __init__(self, x):\n        self.x = x\n\n" \
           "    def execute(self, inputs):\n        try:\n            return eval(inputs['expr'])\n" \
           "        except:\n            pass\n"
    result = analyse(code)
    issues = [(i["severity"], i["category"], i["message"], i["line"]) for i in result["quality"]["issues"]]
    assert issues[:6] == [
        ("error", "security", "imports subprocess (processes/network are unavailable in the sandbox)", 1),
        ("error", "contract", "get_capabilities(self) is missing", 3),
        ("error", "contract", "__init__ must take no required arguments", 4),
        ("error", "security", "eval() runs dynamic code", 9),
        ("warning", "robustness", "bare except hides every error", 10),
        ("info", "documentation", "module has no docstring", 1),
    ]
    assert result["quality"]["score"] == 0.0
    assert result["capabilities"]["confidence"] == 0.7  # 0.9 - dynamic output - untyped input


def test_analysis_of_code_that_does_not_parse_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        analyse("class A(:\n")
    assert caught.value.message == "code does not parse: line 1: invalid syntax"
