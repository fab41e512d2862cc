"""Static metrics, the quality score, search text matching and page tokens (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry_svc import matching
from registry_svc.quality import cyclomatic_complexity, lint_findings, quality_score, static_metrics
from registry_svc.repository import p95

pytestmark = pytest.mark.unit  # no I/O

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"


def test_static_metrics_of_a_documented_typed_example_score_high() -> None:
    metrics = static_metrics((EXAMPLES / "word_count.py").read_text())
    assert metrics["scores"] == {"complexity": 1.0, "documentation": 1.0, "typing": 1.0, "size": 1.0, "lint": 1.0}
    assert metrics["static_score"] == 1.0


def test_static_metrics_penalise_missing_docs_types_and_lint() -> None:
    code = ("import os\n\nclass A:\n    def get_capabilities(self):\n        return {}\n\n"
            "    def execute(self, inputs, cache=[]):\n        try:\n            print(inputs)\n"
            "        except:\n            pass\n        return {}\n")
    metrics = static_metrics(code)
    assert metrics["lint_findings"] == [
        "line 1: unused import os", "line 7: mutable default argument in execute",
        "line 9: print() in agent code (return results instead)", "line 10: bare except",
    ]
    assert metrics["scores"]["documentation"] == 0.0
    assert metrics["scores"]["typing"] == 0.0
    assert metrics["static_score"] < 0.5


def test_cyclomatic_complexity_counts_branches_and_boolean_operators() -> None:
    import ast

    function = ast.parse("def f(a, b):\n    if a and b:\n        return 1\n    for x in a:\n        pass\n"
                         "    return [y for y in b if y]\n").body[0]
    assert cyclomatic_complexity(function) == 6


def test_lint_findings_flag_long_lines() -> None:
    import ast

    code = "x = '" + "a" * 130 + "'\n"
    assert lint_findings(ast.parse(code), code) == ["line 1: line longer than 120 characters"]


@pytest.mark.parametrize(("static", "model", "expected"), [(1.0, None, 1.0), (0.5, 1.0, 0.7), (1.2, -1.0, 0.6)])
def test_quality_score_blends_static_and_model_in_unit_range(static: float, model: float | None,
                                                             expected: float) -> None:
    assert quality_score(static, model) == expected


def test_overlap_reports_which_field_matched_each_term() -> None:
    score, reasons = matching.overlap(matching.query_terms("count the words in a text"),
                                      {"name": "word_count", "description": "Counts words", "capabilities": "text"})
    assert score == pytest.approx((1.0 + 1.0 + 0.85) / 3, abs=1e-4)
    assert reasons == ("name matches 'count'", "name matches 'words'", "capabilities mention 'text'")


def test_blended_score_treats_unanalysed_and_unrun_agents_as_neutral() -> None:
    assert matching.blended_score(1.0, None, 0, 0) == 0.7 + 0.2 * 0.5 + 0.1 * 0.5


def test_p95_uses_nearest_rank() -> None:
    assert p95([float(v) for v in range(1, 101)]) == 95.0
    assert p95([3.0]) == 3.0
    assert p95([]) == 0.0
