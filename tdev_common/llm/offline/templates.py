"""The offline template library: one entry per agent kind, with its parameters, schemas and wording."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tdev_common.llm.offline import library
from tdev_common.llm.offline.render import render_agent

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer", "minimum": 0}
_NUM: dict[str, Any] = {"type": "number"}

KEY_SCHEMAS: dict[str, dict[str, Any]] = {
    "text": _STR,
    "words": {"type": "array", "items": _STR},
    "numbers": {"type": "array", "items": _NUM},
    "record": {"type": "object"},
    "records": {"type": "array", "items": {"type": "object"}},
    "values": {"type": "array"},
    "word_count": _INT,
    "unique_words": _INT,
    "character_count": _INT,
    "sentence_count": _INT,
    "line_count": _INT,
    "top_words": {"type": "array", "items": {"type": "object", "required": ["word", "count"],
                                             "properties": {"word": _STR, "count": _INT}}},
    "top_characters": {"type": "array", "items": {"type": "object", "required": ["character", "count"],
                                                  "properties": {"character": _STR, "count": _INT}}},
    "emails": {"type": "array", "items": _STR},
    "urls": {"type": "array", "items": _STR},
    "slug": _STR,
    "is_palindrome": {"type": "boolean"},
    "counts": {"type": "object", "additionalProperties": _INT},
    "totals": {"type": "object", "additionalProperties": _NUM},
    "count": _INT,
}
MEASURES = ("count", "sum", "mean", "median", "min", "max", "range", "stddev", "variance", "mode")
DEFAULT_MEASURES = ["count", "mean", "median", "min", "max", "stddev"]


def key_schema(key: str) -> dict[str, Any]:
    """JSON Schema of a value travelling under a key (statistics are numbers)."""
    return KEY_SCHEMAS.get(key, _NUM if key in MEASURES else {})


def object_schema(keys: tuple[str, ...]) -> dict[str, Any]:
    """An object schema requiring the keys."""
    return {"type": "object", "required": list(keys), "properties": {key: key_schema(key) for key in keys}}


Params = dict[str, Any]


@dataclass(frozen=True)
class Template:
    """One agent kind: its reference function and how it is described, named and wired."""

    name: str
    function: Callable[..., dict[str, Any]]
    defaults: Params
    consumes: Callable[[Params], tuple[str, ...]]
    produces: Callable[[Params], tuple[str, ...]]
    class_name: Callable[[Params], str]
    describe: Callable[[Params], str]
    keywords: tuple[str, ...] = field(default_factory=tuple)

    def params(self, overrides: Params | None = None) -> Params:
        """Defaults with overrides applied (unknown names dropped)."""
        merged = dict(self.defaults)
        for name, value in (overrides or {}).items():
            if name in merged:
                merged[name] = value
        return merged

    def run(self, inputs: dict[str, Any], params: Params) -> dict[str, Any]:
        """The reference result (the generated agent computes the same)."""
        return self.function(inputs, **params)

    def input_schema(self, params: Params) -> dict[str, Any]:
        """Schema of the agent's inputs."""
        return object_schema(self.consumes(params))

    def output_schema(self, params: Params) -> dict[str, Any]:
        """Schema of the agent's outputs."""
        return object_schema(self.produces(params))

    def render(self, params: Params, class_name: str | None = None, description: str | None = None) -> str:
        """Agent source for these params."""
        name = class_name or self.class_name(params)
        text = _docstring_safe(description or self.describe(params))
        capabilities = {
            "name": name,
            "description": text,
            "input_schema": self.input_schema(params),
            "output_schema": self.output_schema(params),
            "template": self.name,
            "parameters": params,
        }
        return render_agent(function=self.function, params=params, class_name=name, description=text,
                            capabilities=capabilities, template=self.name)


def _docstring_safe(text: str) -> str:
    return " ".join(text.replace("\\", "/").replace('"""', "'''").split())


def _fixed(*keys: str) -> Callable[[Params], tuple[str, ...]]:
    return lambda _params: keys


def _name(value: str) -> Callable[[Params], str]:
    return lambda _params: value


def _fields(params: Params) -> str:
    return ", ".join(repr(f) for f in params.get("fields", []))


_CONDITION_WORDS = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most",
                    "eq": "equal to", "ne": "not equal to", "contains": "containing"}


def _number_condition(params: Params) -> str:
    condition = params["condition"]
    if condition in ("even", "odd"):
        return f"{condition} numbers"
    return f"numbers {_CONDITION_WORDS[condition]} {params['value']:g}"


def _t(name: str, function: Callable[..., dict[str, Any]], defaults: Params,
       consumes: Callable[[Params], tuple[str, ...]], produces: Callable[[Params], tuple[str, ...]],
       class_name: Callable[[Params], str], describe: Callable[[Params], str], *keywords: str) -> Template:
    return Template(name, function, defaults, consumes, produces, class_name, describe, keywords)


_CASE_NAMES = {"lower": "LowercaseConverter", "upper": "UppercaseConverter", "title": "TitleCaseConverter"}
_OPERATION_WORDS = {"add": "Adds {o:g} to", "subtract": "Subtracts {o:g} from", "multiply": "Multiplies",
                    "divide": "Divides", "power": "Raises"}


def _transform_text(params: Params) -> str:
    operand = params["operand"]
    operation = params["operation"]
    if operation in ("add", "subtract"):
        return _OPERATION_WORDS[operation].format(o=operand) + " every number."
    if operation == "power":
        return f"Raises every number to the power {operand:g}."
    return f"{_OPERATION_WORDS[operation]} every number by {operand:g}."


_LIST: tuple[Template, ...] = (
    _t("normalize_whitespace", library.normalize_whitespace, {}, _fixed("text"), _fixed("text"),
       _name("WhitespaceNormalizer"),
       lambda p: "Collapses runs of whitespace into single spaces and trims the ends of the text.",
       "whitespace", "normalise"),
    _t("change_case", library.change_case, {"mode": "lower"}, _fixed("text"), _fixed("text"),
       lambda p: _CASE_NAMES[p["mode"]], lambda p: f"Converts the text to {p['mode']} case.", "case"),
    _t("strip_punctuation", library.strip_punctuation, {}, _fixed("text"), _fixed("text"),
       _name("PunctuationStripper"), lambda p: "Removes punctuation from the text.", "punctuation"),
    _t("reverse_text", library.reverse_text, {"unit": "characters"}, _fixed("text"), _fixed("text"),
       lambda p: {"words": "WordOrderReverser", "each_word": "WordLetterReverser"}.get(p["unit"], "TextReverser"),
       lambda p: "Reverses the letters of each word, keeping the word order." if p["unit"] == "each_word"
       else f"Reverses the order of the {p['unit']} of the text.", "reverse"),
    _t("replace_text", library.replace_text, {"old": "", "new": "", "ignore_case": False}, _fixed("text"),
       _fixed("text"), _name("TextReplacer"),
       lambda p: f"Replaces every occurrence of {p['old']!r} with {p['new']!r}.", "replace"),
    _t("truncate_text", library.truncate_text, {"max_length": 100, "suffix": "", "unit": "characters"},
       _fixed("text"), _fixed("text"), _name("TextTruncator"),
       lambda p: f"Keeps at most the first {p['max_length']} {p['unit']} of the text.", "truncate"),
    _t("tokenize_words", library.tokenize_words, {"lowercase": True}, _fixed("text"), _fixed("words"),
       _name("WordTokenizer"),
       lambda p: "Splits the text into words" + (", lowercased." if p["lowercase"] else "."), "tokenize"),
    _t("count_words", library.count_words, {}, _fixed("text"), _fixed("word_count"), _name("WordCounter"),
       lambda p: "Counts the words of the text.", "words", "count"),
    _t("count_characters", library.count_characters, {"mode": "all"}, _fixed("text"),
       _fixed("character_count"), _name("CharacterCounter"),
       lambda p: {"all": "Counts all characters of the text.",
                  "non_whitespace": "Counts the characters of the text, excluding whitespace.",
                  "letters": "Counts the letters of the text."}[p["mode"]], "characters"),
    _t("count_sentences", library.count_sentences, {}, _fixed("text"), _fixed("sentence_count"),
       _name("SentenceCounter"), lambda p: "Counts the sentences of the text.", "sentences"),
    _t("count_lines", library.count_lines, {}, _fixed("text"), _fixed("line_count"), _name("LineCounter"),
       lambda p: "Counts the non-empty lines of the text.", "lines"),
    _t("character_frequency", library.character_frequency, {"top_n": 3}, _fixed("text"),
       _fixed("top_characters"), _name("LetterFrequencyCounter"),
       lambda p: f"Reports the {p['top_n']} most frequent letters of the text with their counts.", "letters"),
    _t("extract_emails", library.extract_emails, {}, _fixed("text"), _fixed("emails"), _name("EmailExtractor"),
       lambda p: "Lists the e-mail addresses found in the text.", "email"),
    _t("extract_urls", library.extract_urls, {}, _fixed("text"), _fixed("urls"), _name("UrlExtractor"),
       lambda p: "Lists the URLs found in the text.", "url"),
    _t("extract_numbers", library.extract_numbers, {}, _fixed("text"), _fixed("numbers"),
       _name("NumberExtractor"), lambda p: "Lists the numbers written in the text.", "numbers"),
    _t("slugify", library.slugify, {}, _fixed("text"), _fixed("slug"), _name("Slugifier"),
       lambda p: "Turns the text into a URL slug.", "slug"),
    _t("is_palindrome", library.is_palindrome, {}, _fixed("text"), _fixed("is_palindrome"),
       _name("PalindromeChecker"), lambda p: "Tells whether the text is a palindrome.", "palindrome"),
    _t("remove_stopwords", library.remove_stopwords,
       {"stopwords": ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is",
                      "it", "of", "on", "or", "so", "such", "that", "the", "their", "then", "there", "these",
                      "they", "this", "to", "was", "will", "with"]},
       _fixed("words"), _fixed("words"), _name("StopwordRemover"),
       lambda p: "Removes common English stopwords from the list of words.", "stopwords"),
    _t("word_frequency", library.word_frequency, {"top_n": 3}, _fixed("words"),
       _fixed("word_count", "unique_words", "top_words"), _name("WordFrequencyCounter"),
       lambda p: f"Counts the words and reports the {p['top_n']} most frequent ones with their counts.",
       "frequency"),
    _t("sort_items", library.sort_items, {"key": "numbers", "descending": False},
       lambda p: (p["key"],), lambda p: (p["key"],),
       lambda p: "WordSorter" if p["key"] == "words" else "NumberSorter",
       lambda p: f"Sorts the {p['key']} in {'descending' if p['descending'] else 'ascending'} order.", "sort"),
    _t("take_items", library.take_items, {"key": "numbers", "count": 3, "end": "first"}, lambda p: (p["key"],),
       lambda p: (p["key"],), _name("ItemLimiter"),
       lambda p: f"Keeps the {p['end']} {p['count']} {p['key']}.", "first"),
    _t("deduplicate", library.deduplicate, {"key": "numbers"}, lambda p: (p["key"],), lambda p: (p["key"],),
       lambda p: "WordDeduplicator" if p["key"] == "words" else "NumberDeduplicator",
       lambda p: f"Removes repeated {p['key']}, keeping first occurrences in order.", "unique"),
    _t("statistics", library.statistics, {"measures": list(DEFAULT_MEASURES), "precision": 6, "sample": False},
       _fixed("numbers"), lambda p: tuple(p["measures"]), _name("StatisticsCalculator"),
       lambda p: "Computes the " + ", ".join(p["measures"]) + " of a list of numbers.", "statistics"),
    _t("filter_numbers", library.filter_numbers, {"condition": "gt", "value": 0.0}, _fixed("numbers"),
       _fixed("numbers"), _name("NumberFilter"), lambda p: f"Keeps only the {_number_condition(p)}.",
       "filter"),
    _t("transform_numbers", library.transform_numbers, {"operation": "multiply", "operand": 2.0, "precision": 6},
       _fixed("numbers"), _fixed("numbers"), _name("NumberTransformer"), _transform_text, "multiply"),
    _t("normalize_numbers", library.normalize_numbers, {"precision": 6}, _fixed("numbers"), _fixed("numbers"),
       _name("MinMaxNormalizer"), lambda p: "Rescales the numbers linearly to the range [0, 1].", "normalise"),
    _t("round_numbers", library.round_numbers, {"digits": 2}, _fixed("numbers"), _fixed("numbers"),
       _name("NumberRounder"), lambda p: f"Rounds every number to {p['digits']} decimals.", "round"),
    _t("convert_temperature", library.convert_temperature, {"direction": "c_to_f", "precision": 2},
       _fixed("numbers"), _fixed("numbers"),
       lambda p: "CelsiusToFahrenheit" if p["direction"] == "c_to_f" else "FahrenheitToCelsius",
       lambda p: "Converts temperatures from " + ("Celsius to Fahrenheit." if p["direction"] == "c_to_f"
                                                  else "Fahrenheit to Celsius."), "temperature"),
    _t("rename_fields", library.rename_fields, {"key": "record", "mapping": {}}, lambda p: (p["key"],),
       lambda p: (p["key"],), _name("FieldRenamer"),
       lambda p: "Renames fields: " + ", ".join(f"{a!r} -> {b!r}" for a, b in p["mapping"].items()) + ".",
       "rename"),
    _t("select_fields", library.select_fields, {"key": "record", "fields": []}, lambda p: (p["key"],),
       lambda p: (p["key"],), _name("FieldSelector"), lambda p: f"Keeps only the fields {_fields(p)}.",
       "select"),
    _t("drop_fields", library.drop_fields, {"key": "record", "fields": []}, lambda p: (p["key"],),
       lambda p: (p["key"],), _name("FieldDropper"), lambda p: f"Removes the fields {_fields(p)}.", "drop"),
    _t("flatten_record", library.flatten_record, {"key": "record", "separator": "."}, lambda p: (p["key"],),
       lambda p: (p["key"],), _name("RecordFlattener"),
       lambda p: f"Flattens nested objects, joining key paths with {p['separator']!r}.", "flatten"),
    _t("filter_records", library.filter_records, {"field": "value", "condition": "eq", "value": None},
       _fixed("records"), _fixed("records"), _name("RecordFilter"),
       lambda p: f"Keeps the records whose {p['field']!r} is {_CONDITION_WORDS[p['condition']]} {p['value']!r}.",
       "where"),
    _t("sort_records", library.sort_records, {"field": "id", "descending": False}, _fixed("records"),
       _fixed("records"), _name("RecordSorter"),
       lambda p: f"Sorts the records by {p['field']!r} in "
                 f"{'descending' if p['descending'] else 'ascending'} order.", "sort"),
    _t("count_by_field", library.count_by_field, {"field": "status"}, _fixed("records"), _fixed("counts"),
       _name("FieldValueCounter"), lambda p: f"Counts the records per value of {p['field']!r}.", "group"),
    _t("pluck_field", library.pluck_field, {"field": "value", "out_key": "values"}, _fixed("records"),
       lambda p: (p["out_key"],), _name("FieldExtractor"),
       lambda p: f"Collects the {p['field']!r} value of every record.", "pluck"),
    _t("aggregate_by_field", library.aggregate_by_field,
       {"group": "region", "field": "amount", "measure": "sum", "precision": 6}, _fixed("records"),
       _fixed("totals"), _name("GroupAggregator"),
       lambda p: f"Groups the records by {p['group']!r} and computes the {p['measure']} of {p['field']!r} "
                 "per group.", "per"),
    _t("compute_field", library.compute_field,
       {"target": "total", "left": "price", "operation": "multiply", "right": "quantity", "precision": 6},
       _fixed("records"), _fixed("records"), _name("FieldCalculator"),
       lambda p: f"Adds {p['target']!r} = {p['left']!r} {p['operation']} {p['right']!r} to every record.",
       "compute"),
    _t("parse_csv", library.parse_csv, {"delimiter": ",", "convert_numbers": True}, _fixed("text"),
       _fixed("records"), _name("CsvParser"),
       lambda p: "Parses CSV text with a header row into records (numbers converted).", "csv"),
)

TEMPLATES: dict[str, Template] = {template.name: template for template in _LIST}
