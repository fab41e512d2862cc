"""Correct reference programs of the repair benchmark, each with a generator of its inputs.

Written for this benchmark (not taken from the operators' examples): strings, lists, numbers, records and
small algorithms. The generators mix typical values with edge values (empty lists, zeros, bounds) so
that guards and base cases are exercised.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Inputs = dict[str, Any]


@dataclass(frozen=True)
class Reference:
    """A correct agent program and a generator of its inputs."""

    name: str
    code: str
    inputs: Callable[[random.Random], Inputs]


def _agent(name: str, body: str, helpers: str = "") -> str:
    """Agent source: a class with capabilities and ``execute`` (body indented by 8), then helper methods."""
    title = "".join(part.title() for part in name.split("_"))
    return (
        f'"""{name}: a reference program of the repair benchmark."""\n\n\n'
        f"class {title}:\n"
        f"    def get_capabilities(self):\n"
        f'        return {{"name": "{name}"}}\n\n'
        f"    def execute(self, inputs):\n{body}{helpers}"
    )


def _word(rng: random.Random, low: int = 2, high: int = 7) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(low, high)))


def _words(rng: random.Random, low: int = 0, high: int = 5) -> list[str]:
    return [_word(rng) for _ in range(rng.randint(low, high))]


def _ints(rng: random.Random, low: int = 0, high: int = 8, lo: int = -20, hi: int = 50) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(low, high))]


def _mixed_case(rng: random.Random, word: str) -> str:
    return "".join(ch.upper() if rng.random() < 0.4 else ch for ch in word)


REFERENCES: tuple[Reference, ...] = (
    Reference(
        "clamp_score",
        _agent("clamp_score", """        raw = inputs["raw"] * inputs["weight"]
        score = min(100, max(0, round(raw)))
        return {"score": score}
"""),
        lambda rng: {"raw": rng.randint(-50, 150), "weight": rng.choice([0.5, 1.0, 1.5, 2.0])},
    ),
    Reference(
        "sum_of_squares",
        _agent("sum_of_squares", """        a = inputs["a"]
        b = inputs["b"]
        c = inputs["c"]
        return {"total": a * a + b * b + c * c}
"""),
        lambda rng: {"a": rng.randint(-9, 9), "b": rng.randint(-9, 9), "c": rng.randint(-9, 9)},
    ),
    Reference(
        "full_name",
        _agent("full_name", """        first = inputs["first"].strip()
        last = inputs["last"].strip()
        return {"name": (first + " " + last).title()}
"""),
        lambda rng: {"first": " " * rng.randint(0, 2) + _mixed_case(rng, _word(rng)),
                     "last": _mixed_case(rng, _word(rng)) + " " * rng.randint(0, 2)},
    ),
    Reference(
        "word_count",
        _agent("word_count", """        words = inputs["text"].split()
        long_words = [word for word in words if len(word) > 3]
        return {"words": len(words), "long": len(long_words)}
"""),
        lambda rng: {"text": " ".join(_words(rng, 0, 8))},
    ),
    Reference(
        "mean_value",
        _agent("mean_value", """        values = inputs["values"]
        if not values:
            return {"mean": 0.0}
        return {"mean": round(sum(values) / len(values), 2)}
"""),
        lambda rng: {"values": _ints(rng, 0, 6)},
    ),
    Reference(
        "largest_gap",
        _agent("largest_gap", """        values = sorted(inputs["values"])
        gap = 0
        for index in range(1, len(values)):
            gap = max(gap, values[index] - values[index - 1])
        return {"gap": gap}
"""),
        lambda rng: {"values": _ints(rng, 0, 7)},
    ),
    Reference(
        "count_vowels",
        _agent("count_vowels", """        text = inputs["text"].lower()
        count = 0
        for ch in text:
            if ch in "aeiou":
                count += 1
        return {"vowels": count}
"""),
        lambda rng: {"text": _mixed_case(rng, " ".join(_words(rng, 0, 4)))},
    ),
    Reference(
        "fizzbuzz",
        _agent("fizzbuzz", """        n = inputs["n"]
        if n % 15 == 0:
            return {"label": "FizzBuzz"}
        if n % 3 == 0:
            return {"label": "Fizz"}
        if n % 5 == 0:
            return {"label": "Buzz"}
        return {"label": str(n)}
"""),
        lambda rng: {"n": rng.randint(1, 100)},
    ),
    Reference(
        "factorial",
        _agent("factorial", """        return {"value": self._factorial(inputs["n"])}

""", """    def _factorial(self, n):
        if n <= 1:
            return 1
        return n * self._factorial(n - 1)
"""),
        lambda rng: {"n": rng.randint(0, 10)},
    ),
    Reference(
        "digit_sum",
        _agent("digit_sum", """        return {"sum": self._digits(abs(inputs["n"]))}

""", """    def _digits(self, n):
        if n < 10:
            return n
        return n % 10 + self._digits(n // 10)
"""),
        lambda rng: {"n": rng.randint(-5000, 99999)},
    ),
    Reference(
        "running_total",
        _agent("running_total", """        totals = []
        total = 0
        for value in inputs["values"]:
            total = total + value
            totals.append(total)
        return {"totals": totals}
"""),
        lambda rng: {"values": _ints(rng, 0, 6, -9, 9)},
    ),
    Reference(
        "unique_sorted",
        _agent("unique_sorted", """        seen = []
        for word in inputs["words"]:
            word = word.lower()
            if word not in seen:
                seen.append(word)
        return {"unique": sorted(seen)}
"""),
        lambda rng: {"words": [_mixed_case(rng, rng.choice(["ant", "bee", "cat", "dog", "eel"]))
                               for _ in range(rng.randint(0, 7))]},
    ),
    Reference(
        "invoice_total",
        _agent("invoice_total", """        total = 0
        for line in inputs["lines"]:
            total = total + line["price"] * line["qty"]
        if total > 100:
            total = total * 0.9
        return {"total": round(total, 2)}
"""),
        lambda rng: {"lines": [{"price": rng.randint(1, 40), "qty": rng.randint(1, 5)}
                               for _ in range(rng.randint(0, 4))]},
    ),
    Reference(
        "bmi_category",
        _agent("bmi_category", """        bmi = inputs["weight"] / (inputs["height"] * inputs["height"])
        if bmi < 18.5:
            return {"category": "under", "bmi": round(bmi, 1)}
        if bmi < 25:
            return {"category": "normal", "bmi": round(bmi, 1)}
        return {"category": "over", "bmi": round(bmi, 1)}
"""),
        lambda rng: {"weight": rng.randint(40, 120), "height": rng.choice([1.5, 1.6, 1.7, 1.8, 1.9])},
    ),
    Reference(
        "initials",
        _agent("initials", """        parts = inputs["name"].split()
        letters = [part[0].upper() for part in parts]
        return {"initials": ".".join(letters)}
"""),
        lambda rng: {"name": " ".join(_mixed_case(rng, w) for w in _words(rng, 1, 4))},
    ),
    Reference(
        "reverse_words",
        _agent("reverse_words", """        words = inputs["text"].split()
        words.reverse()
        return {"text": " ".join(words), "count": len(words)}
"""),
        lambda rng: {"text": " ".join(_words(rng, 0, 5))},
    ),
    Reference(
        "top_scorer",
        _agent("top_scorer", """        best = ""
        best_score = -1
        for record in inputs["records"]:
            if record["score"] > best_score:
                best = record["name"]
                best_score = record["score"]
        return {"name": best, "score": best_score}
"""),
        lambda rng: {"records": [{"name": _word(rng), "score": rng.randint(0, 100)}
                                 for _ in range(rng.randint(0, 5))]},
    ),
    Reference(
        "pass_fail",
        _agent("pass_fail", """        passed = 0
        failed = 0
        for score in inputs["scores"]:
            if score >= 50:
                passed += 1
            else:
                failed += 1
        return {"passed": passed, "failed": failed}
"""),
        lambda rng: {"scores": _ints(rng, 0, 8, 0, 100)},
    ),
    Reference(
        "fahrenheit",
        _agent("fahrenheit", """        celsius = inputs["celsius"]
        return {"fahrenheit": round(celsius * 9 / 5 + 32, 1)}
"""),
        lambda rng: {"celsius": rng.randint(-40, 100)},
    ),
    Reference(
        "gcd",
        _agent("gcd", """        return {"gcd": self._gcd(inputs["a"], inputs["b"])}

""", """    def _gcd(self, a, b):
        if b == 0:
            return a
        return self._gcd(b, a % b)
"""),
        lambda rng: {"a": rng.randint(1, 200), "b": rng.randint(0, 200)},
    ),
    Reference(
        "palindrome",
        _agent("palindrome", """        cleaned = "".join([ch for ch in inputs["text"].lower() if ch.isalnum()])
        return {"palindrome": cleaned == cleaned[::-1], "length": len(cleaned)}
"""),
        lambda rng: {"text": rng.choice([lambda w: w + w[::-1], lambda w: w, lambda w: w[:-1] + w[::-1]])(
            _mixed_case(rng, _word(rng, 1, 5)))},
    ),
    Reference(
        "shipping_fee",
        _agent("shipping_fee", """        weight = inputs["weight"]
        fee = 5 + 2 * max(0, weight - 1)
        if inputs["express"]:
            fee = fee * 2
        return {"fee": min(fee, 40)}
"""),
        lambda rng: {"weight": rng.randint(0, 25), "express": rng.random() < 0.4},
    ),
    Reference(
        "range_summary",
        _agent("range_summary", """        values = inputs["values"]
        low = min(values)
        high = max(values)
        return {"low": low, "high": high, "span": high - low}
"""),
        lambda rng: {"values": _ints(rng, 1, 7)},
    ),
    Reference(
        "safe_ratio",
        _agent("safe_ratio", """        a = inputs["a"]
        b = inputs["b"]
        if b == 0:
            return {"ratio": 0.0}
        return {"ratio": round(a / b, 3)}
"""),
        lambda rng: {"a": rng.randint(-30, 30), "b": rng.choice([0, 0, *range(-6, 7)])},
    ),
    Reference(
        "padded_code",
        _agent("padded_code", """        code = str(inputs["number"]).zfill(inputs["width"])
        return {"code": inputs["prefix"].upper() + "-" + code}
"""),
        lambda rng: {"number": rng.randint(0, 9999), "width": rng.randint(3, 6), "prefix": _word(rng, 2, 3)},
    ),
    Reference(
        "count_above",
        _agent("count_above", """        threshold = inputs["threshold"]
        above = [value for value in inputs["values"] if value > threshold]
        return {"count": len(above), "total": sum(above)}
"""),
        lambda rng: {"values": _ints(rng, 0, 7), "threshold": rng.randint(-5, 30)},
    ),
    Reference(
        "tax_due",
        _agent("tax_due", """        income = inputs["income"]
        tax = 0
        if income > 10000:
            tax = (income - 10000) * 0.2
        if income > 50000:
            tax = tax + (income - 50000) * 0.2
        return {"tax": round(tax, 2)}
"""),
        lambda rng: {"income": rng.choice([rng.randint(0, 12000), rng.randint(10000, 60000),
                                           rng.randint(45000, 90000)])},
    ),
    Reference(
        "slug",
        _agent("slug", """        words = inputs["title"].lower().split()
        return {"slug": "-".join(words)[:inputs["limit"]]}
"""),
        lambda rng: {"title": " ".join(_mixed_case(rng, w) for w in _words(rng, 1, 5)),
                     "limit": rng.randint(5, 20)},
    ),
)
