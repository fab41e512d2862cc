"""Reference implementations of the offline template library.

Each function is the body of one generated agent: ``tdev_common.llm.offline.templates`` turns it into an agent
class (``execute`` is this body; tunable parameters become ``self.<name>`` attributes set in ``__init__``,
the others are inlined as constants). Functions use only ``inputs``, their keyword parameters and the
modules their template declares, so the generated source is exactly the code that computed the examples.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics as stats
import unicodedata
from collections import Counter
from typing import Any

# ---- text -> text --------------------------------------------------------------------------------


def normalize_whitespace(inputs: dict) -> dict:
    """Collapses every run of whitespace into one space and trims both ends."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    return {"text": " ".join(text.split())}


def change_case(inputs: dict, *, mode: str) -> dict:
    """Converts the text to lower, upper or title case."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    if mode == "upper":
        return {"text": text.upper()}
    if mode == "title":
        return {"text": text.title()}
    return {"text": text.lower()}


def strip_punctuation(inputs: dict) -> dict:
    """Removes punctuation characters (Unicode category P*), keeping letters, digits and spaces."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    kept = [ch for ch in text if not unicodedata.category(ch).startswith("P")]
    return {"text": "".join(kept)}


def reverse_text(inputs: dict, *, unit: str) -> dict:
    """Reverses the order of the characters or of the words of the text, or the letters of each word."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    if unit == "words":
        return {"text": " ".join(reversed(text.split()))}
    if unit == "each_word":
        return {"text": " ".join(word[::-1] for word in text.split())}
    return {"text": text[::-1]}


def replace_text(inputs: dict, *, old: str, new: str, ignore_case: bool) -> dict:
    """Replaces every occurrence of one string by another."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    if not old:
        return {"text": text}
    flags = re.IGNORECASE if ignore_case else 0
    return {"text": re.sub(re.escape(old), lambda _match: new, text, flags=flags)}


def truncate_text(inputs: dict, *, max_length: int, suffix: str, unit: str = "characters") -> dict:
    """Keeps at most max_length characters (or words), appending suffix when something was cut."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    if unit == "words":
        words = text.split()
        if len(words) <= max_length:
            return {"text": " ".join(words)}
        return {"text": " ".join(words[:max_length]) + suffix}
    if len(text) <= max_length:
        return {"text": text}
    return {"text": text[: max(0, max_length - len(suffix))] + suffix}


# ---- text -> other values -----------------------------------------------------------------------


def tokenize_words(inputs: dict, *, lowercase: bool) -> dict:
    """Splits the text into words (letters and digits, inner apostrophes kept)."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    words = re.findall(r"[^\W_]+(?:'[^\W_]+)*", text)
    if lowercase:
        words = [word.lower() for word in words]
    return {"words": words}


def count_words(inputs: dict) -> dict:
    """Counts the words of the text (runs of letters and digits)."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    return {"word_count": len(re.findall(r"[^\W_]+(?:'[^\W_]+)*", text))}


def count_characters(inputs: dict, *, mode: str) -> dict:
    """Counts characters: all of them, those that are not whitespace, or letters only."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    if mode == "letters":
        count = sum(1 for ch in text if ch.isalpha())
    elif mode == "non_whitespace":
        count = sum(1 for ch in text if not ch.isspace())
    else:
        count = len(text)
    return {"character_count": count}


def count_sentences(inputs: dict) -> dict:
    """Counts sentences: runs of text ending with '.', '!' or '?' (or the end of the text)."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    parts = [part for part in re.split(r"[.!?]+", text) if part.strip()]
    return {"sentence_count": len(parts)}


def count_lines(inputs: dict) -> dict:
    """Counts the non-empty lines of the text."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    return {"line_count": sum(1 for line in text.splitlines() if line.strip())}


def character_frequency(inputs: dict, *, top_n: int) -> dict:
    """Reports the top_n most frequent letters (case-insensitive), ties broken alphabetically."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    counts = Counter(ch for ch in text.lower() if ch.isalpha())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_n]
    return {"top_characters": [{"character": ch, "count": n} for ch, n in ranked]}


def extract_emails(inputs: dict) -> dict:
    """Lists the e-mail addresses in the text, in order of first appearance, without duplicates."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    found = re.findall(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", text)
    return {"emails": list(dict.fromkeys(found))}


def extract_urls(inputs: dict) -> dict:
    """Lists the http(s) URLs in the text, in order, without duplicates or trailing punctuation."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    found = [url.rstrip(".,;:!?)") for url in re.findall(r"https?://[^\s<>\"']+", text)]
    return {"urls": list(dict.fromkeys(found))}


def extract_numbers(inputs: dict) -> dict:
    """Lists the numbers written in the text (integers stay integers)."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    numbers: list[Any] = []
    for token in re.findall(r"-?\d+(?:\.\d+)?", text):
        numbers.append(float(token) if "." in token else int(token))
    return {"numbers": numbers}


def slugify(inputs: dict) -> dict:
    """Turns the text into a URL slug: ASCII, lowercase, words joined by hyphens."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return {"slug": "-".join(words)}


def is_palindrome(inputs: dict) -> dict:
    """Tells whether the text reads the same backwards, ignoring case, spaces and punctuation."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    letters = [ch.lower() for ch in text if ch.isalnum()]
    return {"is_palindrome": bool(letters) and letters == letters[::-1]}


# ---- words ----------------------------------------------------------------------------------------


def remove_stopwords(inputs: dict, *, stopwords: list) -> dict:
    """Drops common words (case-insensitive) from the list of words."""
    words = inputs["words"]
    if not isinstance(words, list):
        raise TypeError("input 'words' must be a list")
    blocked = {word.lower() for word in stopwords}
    return {"words": [word for word in words if str(word).lower() not in blocked]}


def word_frequency(inputs: dict, *, top_n: int) -> dict:
    """Counts the words and reports the top_n most frequent ones, ties broken alphabetically."""
    words = inputs["words"]
    if not isinstance(words, list):
        raise TypeError("input 'words' must be a list")
    counts = Counter(str(word) for word in words)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_n]
    return {
        "word_count": len(words),
        "unique_words": len(counts),
        "top_words": [{"word": word, "count": count} for word, count in ranked],
    }


# ---- lists (numbers or words) --------------------------------------------------------------------


def sort_items(inputs: dict, *, key: str, descending: bool) -> dict:
    """Sorts the list in ascending (or descending) order."""
    items = inputs[key]
    if not isinstance(items, list):
        raise TypeError(f"input '{key}' must be a list")
    return {key: sorted(items, reverse=descending)}


def take_items(inputs: dict, *, key: str, count: int, end: str) -> dict:
    """Keeps the first (or last) count items of the list."""
    items = inputs[key]
    if not isinstance(items, list):
        raise TypeError(f"input {key!r} must be a list")
    if end == "last":
        return {key: items[-count:] if count > 0 else []}
    return {key: items[:count]}


def deduplicate(inputs: dict, *, key: str) -> dict:
    """Removes repeated items, keeping the first occurrence of each."""
    items = inputs[key]
    if not isinstance(items, list):
        raise TypeError(f"input '{key}' must be a list")
    seen: list = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return {key: seen}


# ---- numbers --------------------------------------------------------------------------------------


def statistics(inputs: dict, *, measures: list, precision: int, sample: bool) -> dict:
    """Computes the requested statistics (count, sum, mean, median, min, max, range, stddev, variance, mode)."""
    numbers = inputs["numbers"]
    if not isinstance(numbers, list) or not numbers:
        raise ValueError("input 'numbers' must be a non-empty list of numbers")
    calculators = {
        "sum": lambda: math.fsum(numbers),
        "mean": lambda: stats.fmean(numbers),
        "median": lambda: stats.median(numbers),
        "min": lambda: min(numbers),
        "max": lambda: max(numbers),
        "range": lambda: max(numbers) - min(numbers),
        "stddev": lambda: stats.stdev(numbers) if sample else stats.pstdev(numbers),
        "variance": lambda: stats.variance(numbers) if sample else stats.pvariance(numbers),
        "mode": lambda: min(stats.multimode(numbers)),
    }
    result: dict[str, Any] = {}
    for measure in measures:
        if measure == "count":
            result["count"] = len(numbers)
        elif measure in calculators:
            result[measure] = round(float(calculators[measure]()), precision)
        else:
            raise ValueError(f"unknown measure {measure!r}")
    return result


def filter_numbers(inputs: dict, *, condition: str, value: float) -> dict:
    """Keeps the numbers that satisfy the condition (gt, ge, lt, le, eq, ne against value; even; odd)."""
    numbers = inputs["numbers"]
    if not isinstance(numbers, list):
        raise TypeError("input 'numbers' must be a list")
    tests = {
        "gt": lambda x: x > value,
        "ge": lambda x: x >= value,
        "lt": lambda x: x < value,
        "le": lambda x: x <= value,
        "eq": lambda x: x == value,
        "ne": lambda x: x != value,
        "even": lambda x: x % 2 == 0,
        "odd": lambda x: x % 2 == 1,
    }
    keep = tests[condition]
    return {"numbers": [x for x in numbers if keep(x)]}


def transform_numbers(inputs: dict, *, operation: str, operand: float, precision: int) -> dict:
    """Applies one arithmetic operation (add, subtract, multiply, divide, power) to every number."""
    numbers = inputs["numbers"]
    if not isinstance(numbers, list):
        raise TypeError("input 'numbers' must be a list")
    if operation == "divide" and operand == 0:
        raise ValueError("cannot divide by zero")
    result = []
    for x in numbers:
        if operation == "add":
            y = x + operand
        elif operation == "subtract":
            y = x - operand
        elif operation == "multiply":
            y = x * operand
        elif operation == "divide":
            y = x / operand
        else:
            y = x**operand
        result.append(round(float(y), precision))
    return {"numbers": result}


def normalize_numbers(inputs: dict, *, precision: int) -> dict:
    """Rescales the numbers linearly to [0, 1] (all zeros when they are all equal)."""
    numbers = inputs["numbers"]
    if not isinstance(numbers, list):
        raise TypeError("input 'numbers' must be a list")
    if not numbers:
        return {"numbers": []}
    low, high = min(numbers), max(numbers)
    span = high - low
    if span == 0:
        return {"numbers": [0.0 for _ in numbers]}
    return {"numbers": [round((x - low) / span, precision) for x in numbers]}


def round_numbers(inputs: dict, *, digits: int) -> dict:
    """Rounds every number to the given number of decimals (half to even, as Python does)."""
    numbers = inputs["numbers"]
    if not isinstance(numbers, list):
        raise TypeError("input 'numbers' must be a list")
    if digits == 0:
        return {"numbers": [round(x) for x in numbers]}
    return {"numbers": [round(float(x), digits) for x in numbers]}


def convert_temperature(inputs: dict, *, direction: str, precision: int) -> dict:
    """Converts temperatures between Celsius and Fahrenheit (c_to_f or f_to_c)."""
    numbers = inputs["numbers"]
    if not isinstance(numbers, list):
        raise TypeError("input 'numbers' must be a list")
    if direction == "f_to_c":
        return {"numbers": [round((x - 32) * 5 / 9, precision) for x in numbers]}
    return {"numbers": [round(x * 9 / 5 + 32, precision) for x in numbers]}


# ---- JSON records ---------------------------------------------------------------------------------


def rename_fields(inputs: dict, *, key: str, mapping: dict) -> dict:
    """Renames fields of the record(s); other fields are kept in place."""
    data = inputs[key]

    def rename(record: dict) -> dict:
        if not isinstance(record, dict):
            raise TypeError("every record must be a JSON object")
        return {mapping.get(name, name): value for name, value in record.items()}

    if key == "records":
        return {key: [rename(record) for record in data]}
    return {key: rename(data)}


def select_fields(inputs: dict, *, key: str, fields: list) -> dict:
    """Keeps only the listed fields of the record(s), in the listed order; absent ones are skipped."""
    data = inputs[key]

    def select(record: dict) -> dict:
        if not isinstance(record, dict):
            raise TypeError("every record must be a JSON object")
        return {name: record[name] for name in fields if name in record}

    if key == "records":
        return {key: [select(record) for record in data]}
    return {key: select(data)}


def drop_fields(inputs: dict, *, key: str, fields: list) -> dict:
    """Removes the listed fields from the record(s)."""
    data = inputs[key]

    def drop(record: dict) -> dict:
        if not isinstance(record, dict):
            raise TypeError("every record must be a JSON object")
        return {name: value for name, value in record.items() if name not in fields}

    if key == "records":
        return {key: [drop(record) for record in data]}
    return {key: drop(data)}


def flatten_record(inputs: dict, *, key: str, separator: str) -> dict:
    """Flattens nested objects into one level, joining key paths with the separator."""
    data = inputs[key]

    def flatten(record: dict, prefix: str = "") -> dict:
        if not isinstance(record, dict):
            raise TypeError("every record must be a JSON object")
        flat: dict = {}
        for name, value in record.items():
            path = f"{prefix}{separator}{name}" if prefix else str(name)
            if isinstance(value, dict) and value:
                flat.update(flatten(value, path))
            else:
                flat[path] = value
        return flat

    if key == "records":
        return {key: [flatten(record) for record in data]}
    return {key: flatten(data)}


def filter_records(inputs: dict, *, field: str, condition: str, value: Any) -> dict:
    """Keeps the records whose field satisfies the condition (eq, ne, gt, ge, lt, le, contains)."""
    records = inputs["records"]
    if not isinstance(records, list):
        raise TypeError("input 'records' must be a list")

    def keep(record: dict) -> bool:
        actual: Any = record
        for part in [field] if isinstance(record, dict) and field in record else field.split("."):
            if not isinstance(actual, dict) or part not in actual:
                return False
            actual = actual[part]
        if condition == "eq":
            return bool(actual == value)
        if condition == "ne":
            return bool(actual != value)
        if condition == "contains":
            return str(value).lower() in str(actual).lower()
        if not isinstance(actual, int | float) or isinstance(actual, bool):
            return False
        if condition == "gt":
            return bool(actual > value)
        if condition == "ge":
            return bool(actual >= value)
        if condition == "lt":
            return bool(actual < value)
        return bool(actual <= value)

    return {"records": [record for record in records if keep(record)]}


def sort_records(inputs: dict, *, field: str, descending: bool) -> dict:
    """Sorts the records by one field; records without it go last, in their original order."""
    records = inputs["records"]
    if not isinstance(records, list):
        raise TypeError("input 'records' must be a list")

    def get(record: Any) -> Any:
        for part in [field] if isinstance(record, dict) and field in record else field.split("."):
            record = record.get(part) if isinstance(record, dict) else None
        return record

    having = [r for r in records if get(r) is not None]
    missing = [r for r in records if get(r) is None]
    return {"records": sorted(having, key=get, reverse=descending) + missing}


def count_by_field(inputs: dict, *, field: str) -> dict:
    """Counts the records per value of one field (missing values count under "null")."""
    records = inputs["records"]
    if not isinstance(records, list):
        raise TypeError("input 'records' must be a list")
    counts: dict = {}
    for record in records:
        value: Any = record
        for part in [field] if isinstance(record, dict) and field in record else field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        label = "null" if value is None else str(value)
        counts[label] = counts.get(label, 0) + 1
    return {"counts": dict(sorted(counts.items()))}


def pluck_field(inputs: dict, *, field: str, out_key: str) -> dict:
    """Collects one field's value from every record that has it, in order."""
    records = inputs["records"]
    if not isinstance(records, list):
        raise TypeError("input 'records' must be a list")
    values = []
    for record in records:
        value: Any = record
        for part in [field] if isinstance(record, dict) and field in record else field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return {out_key: values}


def aggregate_by_field(inputs: dict, *, group: str, field: str, measure: str, precision: int) -> dict:
    """Groups the records by one field and aggregates another per group (sum, mean, min, max or count)."""
    records = inputs["records"]
    if not isinstance(records, list):
        raise TypeError("input 'records' must be a list")
    groups: dict = {}
    for record in records:
        label: Any = record
        for part in [group] if isinstance(record, dict) and group in record else group.split("."):
            label = label.get(part) if isinstance(label, dict) else None
        value: Any = record
        for part in [field] if isinstance(record, dict) and field in record else field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if measure != "count" and (not isinstance(value, int | float) or isinstance(value, bool)):
            continue
        groups.setdefault("null" if label is None else str(label), []).append(value)
    totals: dict = {}
    for name, values in sorted(groups.items()):
        if measure == "count":
            result: Any = len(values)
        elif measure == "mean":
            result = sum(values) / len(values)
        elif measure == "min":
            result = min(values)
        elif measure == "max":
            result = max(values)
        else:
            result = sum(values)
        if isinstance(result, float):
            result = round(result, precision)
            if result.is_integer():
                result = int(result)
        totals[name] = result
    return {"totals": totals}


def compute_field(inputs: dict, *, target: str, left: str, operation: str, right: str, precision: int) -> dict:
    """Adds a field to every record computed from two others (multiply, add, subtract or divide)."""
    records = inputs["records"]
    if not isinstance(records, list):
        raise TypeError("input 'records' must be a list")
    computed = []
    for record in records:
        if not isinstance(record, dict):
            raise TypeError("every record must be an object")
        a = record.get(left)
        b = record.get(right)
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            raise TypeError(f"record fields {left!r} and {right!r} must be numbers")
        if operation == "multiply":
            value: Any = a * b
        elif operation == "add":
            value = a + b
        elif operation == "subtract":
            value = a - b
        else:
            value = a / b if b else None
        if isinstance(value, float):
            value = round(value, precision)
            if value.is_integer():
                value = int(value)
        computed.append({**record, target: value})
    return {"records": computed}


def parse_csv(inputs: dict, *, delimiter: str, convert_numbers: bool) -> dict:
    """Parses CSV text with a header row into records; numeric cells become numbers."""
    text = inputs["text"]
    if not isinstance(text, str):
        raise TypeError("input 'text' must be a string")
    reader = csv.DictReader(io.StringIO(text.strip()), delimiter=delimiter)
    records = []
    for row in reader:
        record: dict = {}
        for name, cell in row.items():
            if name is None:
                continue
            value: Any = cell.strip() if isinstance(cell, str) else cell
            if convert_numbers and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
                value = int(value)
            elif convert_numbers and isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value):
                value = float(value)
            record[name.strip()] = value
        records.append(record)
    return {"records": records}
