"""Requirement text -> ordered steps (template + parameters), by documented rules (see docs/llm.md).

Each detector looks for the phrases of one agent kind and reads its parameters from the text. Matches
are ordered by position; inner matches inside a longer match are dropped; reducers (counts, statistics)
move after the transforms they summarise; "A after B" puts B first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_I = re.IGNORECASE
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "a single": 1}
_NUM = r"(-?\d+(?:\.\d+)?|one|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty)"
_Q = r"[\"'`\u201c\u201d\u2018\u2019]?"
# A field name, or a dotted path into nested objects ("customer.address.city").
_FIELD = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_RECORD_NOUNS = r"(?:records?|rows?|items?|entries|entry|objects?|users?|orders?|products?|people|persons?|" \
                r"employees?|customers?|documents?)"
_GENERIC_WORDS = {"the", "a", "an", "of", "numbers", "number", "values", "value", "list", "records", "record",
                  "data", "them", "it", "all", "each", "every", "items", "rows", "input", "text", "field",
                  "fields", "column", "columns", "and", "their", "its", "words", "characters"}
REDUCERS = {"count_words", "count_characters", "count_sentences", "count_lines", "character_frequency",
            "word_frequency", "statistics", "count_by_field", "is_palindrome", "slugify", "extract_emails",
            "extract_urls", "aggregate_by_field"}


def to_number(token: str) -> float:
    """``"3"`` -> 3.0, ``"three"`` -> 3.0."""
    lowered = token.lower()
    return float(NUMBER_WORDS[lowered]) if lowered in NUMBER_WORDS else float(token)


def _as_int_if_whole(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True)
class Step:
    """One detected agent kind with its parameters and where it was found."""

    template: str
    params: dict[str, Any]
    start: int
    end: int
    phrase: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What the whole text says about the data it works on."""

    text: str
    records: bool
    plural_records: bool
    numeric: bool
    words_input: bool

    @classmethod
    def of(cls, text: str) -> Context:
        """Reads the context of a requirement text."""
        records = bool(re.search(r"\b(records?|rows?|json|objects?|entries|fields?|columns?|csv|keys?|"
                                 r"properties)\b|\b(list|array|set) of " + _RECORD_NOUNS
                                 + r"|\b(users|orders|products|employees|customers|people|persons)\b", text, _I))
        plural = bool(re.search(r"\b(records|rows|entries|csv|list of|array of|each record|every "
                                r"record|users|orders|products|people|employees|customers)\b", text, _I))
        numeric = bool(re.search(r"\b(numbers|integers|values|floats|decimals|prices|scores|amounts|"
                                 r"temperatures|measurements|numeric|data\s*points|readings)\b", text, _I))
        words_input = bool(re.search(r"\b(list|array|sequence) of words\b", text, _I))
        return cls(text, records, plural, numeric, words_input)


def clause_bounds(text: str, position: int) -> tuple[int, int]:
    """Start and end of the clause around position (split at . ; , and 'then')."""
    separators = re.compile(r"[.;,:\n]|\bthen\b|\band then\b", _I)
    start = 0
    for match in separators.finditer(text, 0, position):
        start = match.end()
    following = separators.search(text, position)
    return start, following.start() if following else len(text)


def sentence(text: str, position: int) -> str:
    """The sentence around position (split at . ; and newlines)."""
    start = max(text.rfind(mark, 0, position) for mark in ".;\n") + 1
    ends = [i for i in (text.find(mark, position) for mark in ".;\n") if i >= 0]
    return text[start: min(ends) if ends else len(text)]


def clause(text: str, position: int) -> str:
    """The clause around position."""
    start, end = clause_bounds(text, position)
    return text[start:end]


Detector = Callable[[str, Context], list[Step]]
_DETECTORS: list[Detector] = []


def detector(function: Detector) -> Detector:
    """Registers a detector."""
    _DETECTORS.append(function)
    return function


def _step(template: str, match: re.Match[str], params: dict[str, Any] | None = None,
          **extra: Any) -> Step:
    return Step(template, params or {}, match.start(), match.end(), match.group(0), extra)


# ---- text -----------------------------------------------------------------------------------------


@detector
def _whitespace(text: str, ctx: Context) -> list[Step]:
    pattern = (r"(?<!excluding )(?<!without )(?<!ignoring )(?<!not counting )(?<!on )"
               r"\b(?:(?:normali[sz]\w*|collaps\w*|clean\w*(?:\s+up)?|squeez\w*|tidy\w*|remov\w*)\s+"
               r"(?:the\s+|all\s+|any\s+|extra\s+|redundant\s+|repeated\s+|duplicate\s+)*)?"
               r"(?:white\s*-?\s*space|extra\s+spaces|multiple\s+spaces)\b|\btrim\w*\b")
    return [_step("normalize_whitespace", m) for m in re.finditer(pattern, text, _I)]


@detector
def _case(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\b(lower\s*-?\s*cas\w*|to\s+lower|upper\s*-?\s*cas\w*|to\s+upper|all\s+caps|"
                         r"capitali[sz]\w*\s+(?:all|every)\s+letters?|title\s*-?\s*case)\b", text, _I):
        word = m.group(1).lower()
        if re.search(r"\b(count|how many|number of)\b[^.;,]*$", text[: m.start()], _I) and "letter" in clause(
            text, m.start()).lower():
            continue  # "count the uppercase letters" is not a conversion
        mode = "upper" if ("upper" in word or "caps" in word or "capital" in word) else (
            "title" if "title" in word else "lower")
        steps.append(_step("change_case", m, {"mode": mode}))
    return steps


@detector
def _punctuation(text: str, ctx: Context) -> list[Step]:
    return [_step("strip_punctuation", m) for m in re.finditer(
        r"\b(?:(?:remov\w*|strip\w*|drop\w*|delet\w*|without|ignor\w*)\s+(?:all\s+|the\s+|any\s+)*)?punctuation\b",
        text, _I)]


@detector
def _reverse(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\brevers\w*\s+(?:the\s+)?(?:order\s+of\s+(?:the\s+)?)?(text|string|words|"
                         r"characters|letters|input|sentence)\b", text, _I):
        unit = "words" if m.group(1).lower() == "words" else "characters"
        steps.append(_step("reverse_text", m, {"unit": unit}))
    return steps


@detector
def _replace(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\breplac\w*\s+(?:all\s+|every\s+|each\s+)?(?:occurrences?\s+of\s+)?"
                         r"[\"\u201c'\u2018](.+?)[\"\u201d'\u2019]\s+(?:with|by)\s+"
                         r"[\"\u201c'\u2018](.*?)[\"\u201d'\u2019]", text, _I):
        ignore = bool(re.search(r"case[-\s]insensitive|ignoring case|any case", clause(text, m.start()), _I))
        steps.append(_step("replace_text", m, {"old": m.group(1), "new": m.group(2), "ignore_case": ignore}))
    return steps


@detector
def _truncate(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\b(?:truncat\w*|shorten\w*|cut|limit\w*)\s+(?:\w+\s+){0,4}?(?:to|at)\s+"
                         r"(?:the\s+first\s+|at\s+most\s+)?" + _NUM + r"\s+(?:characters|chars|letters)\b",
                         text, _I):
        suffix = "..." if re.search(r"ellipsis|\.\.\.|…", clause(text, m.start()), _I) else ""
        steps.append(_step("truncate_text", m, {"max_length": int(to_number(m.group(1))), "suffix": suffix}))
    # "keep the first 20 characters", "keep only the first 5 words", "the first 10" (unit left open)
    for m in re.finditer(r"\b(?:keep\w*|take\w*|return\w*|show\w*|output\w*)\s+(?:only\s+)?(?:the\s+)?(?:first|"
                         r"leading)\s+" + _NUM + r"(?:\s+(characters|chars|letters|words))?\b", text, _I):
        if ctx.records or (ctx.numeric and not m.group(2)):
            continue
        suffix = "..." if re.search(r"ellipsis|\.\.\.|…", clause(text, m.start()), _I) else ""
        unit = "words" if (m.group(2) or "").lower() == "words" else "characters"
        steps.append(_step("truncate_text", m, {"max_length": int(to_number(m.group(1))), "suffix": suffix,
                                                "unit": unit}))
    return steps


@detector
def _tokenize(text: str, ctx: Context) -> list[Step]:
    pattern = (r"\b(?:tokeni[sz]\w*|split\w*\s+(?:\w+\s+){0,3}?into\s+(?:individual\s+)?words|"
               r"break\w*\s+(?:\w+\s+){0,3}?into\s+words|(?:extract|list)\s+(?:all\s+)?(?:the\s+)?words)\b")
    steps = []
    for m in re.finditer(pattern, text, _I):
        keep_case = bool(re.search(r"keep(?:ing)?\s+(?:the\s+)?case|case[-\s]sensitive",
                                   clause(text, m.start()), _I))
        steps.append(_step("tokenize_words", m, {"lowercase": not keep_case}))
    return steps


@detector
def _stopwords(text: str, ctx: Context) -> list[Step]:
    return [_step("remove_stopwords", m) for m in re.finditer(
        r"\b(?:(?:remov\w*|filter\w*(?:\s+out)?|drop\w*|ignor\w*|exclud\w*|skip\w*|without)\s+(?:\w+\s+){0,2}?)?"
        r"(?:stop\s*-?\s*words|common\s+(?:english\s+)?words|filler\s+words)\b", text, _I)]


def _top_n(phrase: str, default: int = 3) -> int:
    m = re.search(r"\btop\s+" + _NUM + r"\b|" + _NUM + r"\s+most\b|\b" + _NUM + r"\s+(?:most\s+)?"
                  r"(?:frequent|common)", phrase, _I)
    if not m:
        return default
    token = next(g for g in m.groups() if g)
    return max(1, int(to_number(token)))


@detector
def _frequency(text: str, ctx: Context) -> list[Step]:
    steps = []
    pattern = (r"\b(?:(?:top\s+" + _NUM + r"\s+)?(?:" + _NUM + r"\s+)?most\s+(?:frequent|common|used|popular|"
               r"repeated)(?:\s+\w+)?|(?:word|letter|character)\s+frequenc\w*|frequenc\w+\s+of\s+(?:each\s+)?"
               r"(?:word|letter|character)s?|how\s+often\s+each\s+(?:word|letter|character)|top\s+" + _NUM +
               r"\s+(?:words|letters|characters))")
    for m in re.finditer(pattern, text, _I):
        around = clause(text, m.start()).lower()
        phrase = m.group(0).lower()
        top_n = _top_n(phrase, _top_n(around))
        letters = re.search(r"\b(letters?|characters?|chars?)\b", phrase + " " + around) and "word" not in phrase
        if letters and "word" not in around:
            steps.append(_step("character_frequency", m, {"top_n": top_n}))
        else:
            steps.append(_step("word_frequency", m, {"top_n": top_n}))
    # "which 2 letters appear most often", "the 4 words that occur most"
    asked = (r"\b" + _NUM + r"\s+(words|letters|characters)\s+(?:that\s+)?(?:appear|occur|show\s+up|are\s+used)\w*\s+"
             r"(?:the\s+)?most\b")
    for m in re.finditer(asked, text, _I):
        template = "word_frequency" if m.group(2).lower() == "words" else "character_frequency"
        steps.append(_step(template, m, {"top_n": max(1, int(to_number(m.group(1))))}))
    return steps


@detector
def _count_text(text: str, ctx: Context) -> list[Step]:
    steps = []
    verbs = r"(?:count\w*|number\s+of|how\s+many|total\s+(?:number\s+of\s+)?|tally\w*)"
    kinds = {"word": "count_words", "character": "count_characters", "char": "count_characters",
             "letter": "count_characters", "sentence": "count_sentences", "line": "count_lines"}
    pattern = (r"\b(?:" + verbs + r"\s+(?:the\s+|all\s+|of\s+)*(?:\w+\s+){0,2}?(words?|characters?|chars?|"
               r"letters?|sentences?|lines?)\b|(word|character|char|letter|sentence|line)\s+count\b|"
               r"(?:and|,)\s+(?:the\s+|all\s+)?(words|characters|letters|sentences|lines)\b)")
    for m in re.finditer(pattern, text, _I):
        noun = (m.group(1) or m.group(2) or m.group(3) or "").lower().rstrip("s")
        if m.group(3) and not re.search(r"\b" + verbs + r"\b", sentence(text, m.start())[:200], _I):
            continue  # "..., and the words" only counts inside a counting sentence
        template = kinds.get(noun)
        if template is None:
            continue
        params: dict[str, Any] = {}
        if template == "count_characters":
            around = clause(text, m.start())
            if noun == "letter" or re.search(r"\bletters?\s+only|only\s+(?:the\s+)?letters", around, _I):
                params["mode"] = "letters"
            elif re.search(r"(excluding|without|ignoring|not\s+counting|except)\s+(?:the\s+)?(white\s*-?\s*space|"
                           r"spaces|blanks)|non[-\s]?(white\s*)?space", around, _I):
                params["mode"] = "non_whitespace"
            else:
                params["mode"] = "all"
        steps.append(_step(template, m, params))
    return steps


@detector
def _extract(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\be-?mails?(?:\s+address(?:es)?)?\b", text, _I):
        if re.search(r"\b(extract|find|list|collect|pull|get|detect|gather)", clause(text, m.start()), _I):
            steps.append(_step("extract_emails", m))
    for m in re.finditer(r"\b(?:urls?|links?|web\s+address(?:es)?|hyperlinks?)\b", text, _I):
        if re.search(r"\b(extract|find|list|collect|pull|get|detect|gather)", clause(text, m.start()), _I):
            steps.append(_step("extract_urls", m))
    for m in re.finditer(r"\b(?:extract\w*|find\w*|pull\w*|pars\w*|collect\w*|get)\s+(?:all\s+)?(?:of\s+)?"
                         r"(?:the\s+)?(?:numbers|numeric\s+values|integers|digits)\s+(?:from|in|out\s+of|"
                         r"mentioned|written)", text, _I):
        steps.append(_step("extract_numbers", m))
    return steps


@detector
def _slug_palindrome(text: str, ctx: Context) -> list[Step]:
    steps = [_step("slugify", m) for m in re.finditer(r"\bslug\w*\b|\burl[-\s]friendly\b", text, _I)]
    steps += [_step("is_palindrome", m) for m in re.finditer(r"\bpalindrom\w*\b", text, _I)]
    return steps


# ---- lists ----------------------------------------------------------------------------------------


def _list_key(text: str, position: int, ctx: Context) -> str:
    around = clause(text, position).lower()
    if re.search(r"\bwords?\b", around):
        return "words"
    return "numbers"


@detector
def _sort(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\b(?:sort\w*|order(?:ed|ing)?(?=\s+(?:them|it|the|by|in|from|descending|ascending))|"
                         r"rank\w*|arrang\w*)\b(?!\s+of\b)", text, _I):
        around = clause(text, m.start())
        descending = bool(re.search(r"descend\w*|decreas\w*|reverse|largest\s+first|highest\s+first|"
                                    r"biggest\s+first|most\s+\w+\s+first|high(?:est)?\s+to\s+low|(?:largest|biggest|greatest)\s+to\s+"
                                    r"(?:smallest|least|lowest)|newest\s+first|z\s+to\s+a", around, _I))
        by_field = re.search(r"\bby\s+(?:the\s+|their\s+|its\s+)?" + _Q + "(" + _FIELD + ")" + _Q, around, _I)
        if ctx.records and by_field and by_field.group(1).lower() not in _GENERIC_WORDS:
            steps.append(_step("sort_records", m, {"field": by_field.group(1), "descending": descending}))
        elif re.search(r"\b(numbers|values|words|list|them|integers|scores|prices)\b", around, _I):
            steps.append(_step("sort_items", m, {"key": _list_key(text, m.start(), ctx), "descending": descending}))
    return steps


@detector
def _deduplicate(text: str, ctx: Context) -> list[Step]:
    steps = []
    pattern = (r"\b(?:(?:remov\w*|drop\w*|eliminat\w*|discard\w*|delet\w*|without)\s+(?:the\s+|any\s+|all\s+)?"
               r"(?:duplicat\w*|repeat\w*|repetitions)|de-?duplicat\w*|unique\s+(?:numbers|values|words)|"
               r"distinct\s+(?:numbers|values|words))\b")
    for m in re.finditer(pattern, text, _I):
        steps.append(_step("deduplicate", m, {"key": _list_key(text, m.start(), ctx)}))
    return steps


# ---- numbers --------------------------------------------------------------------------------------

_MEASURE_WORDS = [
    (r"standard\s+deviation|std\.?\s*dev\w*|stdev", "stddev"),
    (r"variance", "variance"),
    (r"average|mean|avg", "mean"),
    (r"median", "median"),
    (r"minimum|smallest|lowest|\bmin\b", "min"),
    (r"maximum|largest|highest|biggest|\bmax\b", "max"),
    (r"\bsum\b|\btotal\b|adds?\s+(?:(?:them|it|these|those|all|everything)\s+){0,3}up|added\s+up", "sum"),
    (r"\brange\b|spread", "range"),
    (r"\bmode\b|most\s+common\s+(?:number|value)", "mode"),
    (r"how\s+many\s+(?:numbers|values)|\bcount\s+(?:of\s+)?(?:the\s+)?(?:numbers|values)", "count"),
]


@detector
def _statistics(text: str, ctx: Context) -> list[Step]:
    """All statistic words of the text merge into one statistics step (at the first one)."""
    found: list[tuple[int, int, str]] = []
    for pattern, measure in _MEASURE_WORDS:
        for m in re.finditer(pattern, text, _I):
            if measure == "sum" and re.search(r"summar", m.group(0), _I):
                continue
            if measure in ("min", "max") and re.search(r"\b(at\s+(least|most)|minimum\s+of\s+\d|maximum\s+of\s+\d)",
                                                        text[max(0, m.start() - 10): m.end() + 8], _I):
                continue
            if measure == "sum" and re.search(r"total\s+(number|count)\s+of", text[m.start(): m.end() + 12], _I):
                continue
            if measure in ("min", "max") and re.search(r"\b(sort|order|rank|arrang)\w*", clause(text, m.start()), _I):
                continue  # "from largest to smallest" describes an order, not a statistic
            found.append((m.start(), m.end(), measure))
    generic = re.search(r"\b(?:summary\s+)?statistics\b|\bdescriptive\s+stat\w*|\bdescribe\s+the\s+(numbers|values)",
                        text, _I)
    if not found and not generic:
        return []
    numeric_related = ctx.numeric or ctx.records or bool(re.search(r"\bnumbers?\b|\bcolumn\b|\bfield\b", text, _I))
    if not numeric_related:
        return []
    measures: list[str] = []
    for _start, _end, measure in sorted(found):
        if measure not in measures:
            measures.append(measure)
    if generic and not measures:
        measures = ["count", "mean", "median", "min", "max", "stddev"]
    start = min([f[0] for f in found] + ([generic.start()] if generic else []))
    end = max([f[1] for f in found] + ([generic.end()] if generic else []))
    sample = bool(re.search(r"\bsample\s+(standard\s+deviation|variance|std)", text, _I))
    params = {"measures": measures, "sample": sample}
    extra: dict[str, Any] = {}
    if ctx.records:
        fields = []
        for m in re.finditer(r"\b(?:average|mean|avg|median|sum|total|minimum|maximum|min|max|highest|lowest|"
                             r"largest|smallest)\s+(?:of\s+)?(?:the\s+|all\s+)?" + _Q + "(" + _FIELD + ")" + _Q,
                             text, _I):
            candidate = m.group(1)
            if candidate.lower() not in _GENERIC_WORDS and candidate.lower() not in {
                    "average", "mean", "median", "sum", "total"}:
                fields.append(candidate)
        for m in re.finditer(r"\b(?:of\s+|the\s+)" + _Q + "(" + _FIELD + ")" + _Q + r"\s+(?:field|column|property|"
                             r"key|values)\b", text, _I):
            if m.group(1).lower() not in _GENERIC_WORDS:
                fields.insert(0, m.group(1))
        if len(set(fields)) > 1:
            extra["fields"] = sorted(set(fields))
        if fields:
            extra["field"] = fields[0]
    return [Step("statistics", params, start, start + 1, text[start:end], extra)]


_COMPARISONS = [
    (r"greater\s+than\s+or\s+equal\s+to|at\s+least|no\s+less\s+than|>=", "ge"),
    (r"less\s+than\s+or\s+equal\s+to|at\s+most|no\s+more\s+than|<=", "le"),
    (r"greater\s+than|larger\s+than|bigger\s+than|more\s+than|above|over|exceed\w*|>", "gt"),
    (r"less\s+than|smaller\s+than|fewer\s+than|below|under|<", "lt"),
    (r"not\s+equal\s+to|other\s+than|!=", "ne"),
    (r"equal\s+to|equals?|==|=", "eq"),
]
_NEGATE = {"gt": "le", "ge": "lt", "lt": "ge", "le": "gt", "eq": "ne", "ne": "eq", "even": "odd", "odd": "even"}
_REMOVE = r"(?:remov\w*|drop\w*|filter\w*\s+out|exclud\w*|discard\w*|ignor\w*|delet\w*|throw\w*\s+away|without)"


@detector
def _filter_numbers(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\b(?:(" + _REMOVE + r"|keep\w*|select\w*|retain\w*|only|filter\w*)\s+(?:\w+\s+){0,2}?)?"
                         r"(even|odd|positive|negative|non-?negative|non-?positive)\s+(?:numbers|values|integers)",
                         text, _I):
        word = m.group(2).lower().replace("-", "")
        condition, value = {"even": ("even", 0.0), "odd": ("odd", 0.0), "positive": ("gt", 0.0),
                            "negative": ("lt", 0.0), "nonnegative": ("ge", 0.0), "nonpositive": ("le", 0.0)}[word]
        if m.group(1) and re.match(_REMOVE, m.group(1), _I):
            condition = _NEGATE[condition]
        steps.append(_step("filter_numbers", m, {"condition": condition, "value": value}))
    comparison = "|".join(f"(?:{p})" for p, _ in _COMPARISONS)
    for m in re.finditer(r"\b(?:(" + _REMOVE + r"|keep\w*|select\w*|retain\w*|only|filter\w*)\s+(?:\w+\s+){0,3}?)?"
                         r"(?:numbers|values|integers|scores|readings)\s+(?:that\s+are\s+|which\s+are\s+|"
                         r"are\s+)?(" + comparison + r")\s+" + _NUM, text, _I):
        if ctx.records and re.search(r"\b(where|whose)\b", clause(text, m.start()), _I):
            continue
        condition = next(code for pattern, code in _COMPARISONS if re.fullmatch(pattern, m.group(2), _I))
        if m.group(1) and re.match(_REMOVE, m.group(1), _I):
            condition = _NEGATE[condition]
        steps.append(_step("filter_numbers", m, {"condition": condition,
                                                 "value": float(to_number(m.group(3)))}))
    return steps


@detector
def _transform_numbers(text: str, ctx: Context) -> list[Step]:
    steps = []
    patterns: list[tuple[str, Callable[[re.Match[str]], tuple[str, float]]]] = [
        (r"\bmultipl\w*\s+(?:\w+\s+){0,3}?by\s+" + _NUM, lambda m: ("multiply", to_number(m.group(1)))),
        (r"\bdivid\w*\s+(?:\w+\s+){0,3}?by\s+" + _NUM, lambda m: ("divide", to_number(m.group(1)))),
        (r"\badd\w*\s+" + _NUM + r"\s+to\s+(?:each|every|all)", lambda m: ("add", to_number(m.group(1)))),
        (r"\bsubtract\w*\s+" + _NUM + r"\s+from\s+(?:each|every|all)",
         lambda m: ("subtract", to_number(m.group(1)))),
        (r"\bincreas\w*\s+(?:\w+\s+){0,3}?by\s+" + _NUM + r"(?!\s*%)", lambda m: ("add", to_number(m.group(1)))),
        (r"\bdecreas\w*\s+(?:\w+\s+){0,3}?by\s+" + _NUM + r"(?!\s*%)",
         lambda m: ("subtract", to_number(m.group(1)))),
        (r"\bdoubl\w*\s+(?:each|every|all|the)", lambda m: ("multiply", 2.0)),
        (r"\btripl\w*\s+(?:each|every|all|the)", lambda m: ("multiply", 3.0)),
        (r"\bhalv\w*\s+(?:each|every|all|the)", lambda m: ("divide", 2.0)),
        (r"\bsquar\w*\s+(?:each|every|all|the)", lambda m: ("power", 2.0)),
    ]
    for pattern, read in patterns:
        for m in re.finditer(pattern, text, _I):
            operation, operand = read(m)
            steps.append(_step("transform_numbers", m, {"operation": operation, "operand": operand}))
    return steps


@detector
def _normalize_numbers(text: str, ctx: Context) -> list[Step]:
    pattern = (r"\b(?:normali[sz]\w*|rescal\w*|scal\w*)\s+(?:\w+\s+){0,4}?(?:to|into|between)\s+(?:the\s+)?"
               r"(?:range\s+|interval\s+)?\[?\(?0(?:\.0)?\s*(?:-|to|,|and|\.\.)\s*1(?:\.0)?\]?\)?|\bmin[-\s]?max\s+"
               r"(?:normali[sz]\w*|scal\w*)")
    return [_step("normalize_numbers", m) for m in re.finditer(pattern, text, _I)]


@detector
def _round(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\bround\w*\s+(?:\w+\s+){0,4}?(?:to\s+)?(?:(" + _NUM[1:-1] + r")\s+decimal\w*|"
                         r"(?:the\s+)?nearest\s+(whole|integer)|(whole\s+numbers|integers))", text, _I):
        digits = 0 if (m.group(2) or m.group(3)) else int(to_number(m.group(1)))
        steps.append(_step("round_numbers", m, {"digits": digits}))
    return steps


@detector
def _temperature(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\b(celsius|centigrade|°c|fahrenheit|°f)\b\s+(?:\w+\s+){0,3}?(?:to|into|in)\s+"
                         r"(fahrenheit|celsius|centigrade)\b", text, _I):
        direction = "f_to_c" if m.group(1).lower() in ("fahrenheit", "°f") else "c_to_f"
        steps.append(_step("convert_temperature", m, {"direction": direction}))
    return steps


# ---- records --------------------------------------------------------------------------------------


def _field_list(fragment: str) -> list[str]:
    """``"name, email and age fields"`` -> ["name", "email", "age"]."""
    fragment = re.split(r"\b(?:from|of|in|for)\s+(?:each|every|the|all)\b|\bthen\b", fragment, maxsplit=1,
                        flags=_I)[0]
    names = re.findall(_Q + "(" + _FIELD + ")" + _Q, fragment)
    return [n for n in names if n.lower() not in _GENERIC_WORDS | {"keys", "key", "properties", "property",
                                                                     "attributes", "attribute", "only", "keep",
                                                                     "fields", "field", "columns", "column"}]


def _record_key(ctx: Context) -> str:
    return "records" if ctx.plural_records else "record"


@detector
def _rename(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\brenam\w*\s+(?:the\s+)?(?:fields?|keys?|columns?|propert(?:y|ies)|attributes?)?\s*"
                         r"((?:" + _Q + _FIELD + _Q + r"\s+(?:to|as|into|->)\s+" + _Q + _FIELD + _Q +
                         r"(?:\s*,\s*|\s+and\s+|\s*$)?)+)", text, _I):
        pairs = re.findall(_Q + "(" + _FIELD + ")" + _Q + r"\s+(?:to|as|into|->)\s+" + _Q + "(" + _FIELD + ")" + _Q,
                           m.group(1))
        if pairs:
            steps.append(_step("rename_fields", m, {"key": _record_key(ctx), "mapping": dict(pairs)}))
    return steps


@detector
def _select(text: str, ctx: Context) -> list[Step]:
    steps = []
    pattern = (r"\b(?:keep\w*|select\w*|pick\w*|retain\w*|extract\w*|return\w*)\s+only\s+(?:the\s+)?"
               r"(?:fields?|keys?|columns?|properties)?\s*(.+?)(?=[.;]|\bthen\b|$)|"
               r"\bonly\s+keep\s+(?:the\s+)?(?:fields?|keys?|columns?|properties)?\s*(.+?)(?=[.;]|\bthen\b|$)")
    for m in re.finditer(pattern, text, _I):
        fragment = m.group(1) or m.group(2) or ""
        # "keep only name and salary" names fields without saying so: a short list of bare names, about records
        bare_names = ctx.records and re.fullmatch(r"\s*" + _FIELD + r"(?:\s*(?:,|\band\b|&)\s*" + _FIELD + r")*\s*",
                                                  fragment, _I) is not None
        if not bare_names and not re.search(r"\b(fields?|keys?|columns?|propert\w+|attributes?)\b", m.group(0), _I):
            continue
        fields = _field_list(re.split(r"\s+(?:fields?|keys?|columns?|properties)\b", fragment, maxsplit=1,
                                      flags=_I)[0])
        if fields:
            steps.append(_step("select_fields", m, {"key": _record_key(ctx), "fields": fields}))
    return steps


@detector
def _drop(text: str, ctx: Context) -> list[Step]:
    steps = []
    nouns = r"(?:fields?|keys?|columns?|propert(?:y|ies)|attributes?)"
    pattern = (r"\b(?:remov\w*|drop\w*|delet\w*|strip\w*|exclud\w*|omit\w*|discard\w*)\s+(?:the\s+)?"
               r"(?:" + nouns + r"\s+((?:" + _Q + _FIELD + _Q + r"(?:\s*,\s*|\s+and\s+|\s+or\s+)?)+)|"
               r"((?:" + _Q + _FIELD + _Q + r"(?:\s*,\s*|\s+and\s+)?)+?)\s+" + nouns + r")")
    for m in re.finditer(pattern, text, _I):
        fields = _field_list(m.group(1) or m.group(2) or "")
        if fields:
            steps.append(_step("drop_fields", m, {"key": _record_key(ctx), "fields": fields}))
    return steps


@detector
def _flatten(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\bflatten\w*\b", text, _I):
        around = clause(text, m.start()) + " " + text[m.end(): m.end() + 60]
        separator = "_" if re.search(r"underscore|_", around, _I) else (
            "/" if re.search(r"slash", around, _I) else ".")
        steps.append(_step("flatten_record", m, {"key": _record_key(ctx), "separator": separator}))
    return steps


def _value(token: str) -> Any:
    cleaned = token.strip().strip("\"'`\u201c\u201d\u2018\u2019")
    lowered = cleaned.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    try:
        return _as_int_if_whole(to_number(cleaned))
    except (ValueError, KeyError):
        return cleaned


@detector
def _filter_records(text: str, ctx: Context) -> list[Step]:
    if not ctx.records:
        return []
    steps = []
    comparison = "|".join(f"(?:{p})" for p, _ in _COMPARISONS) + r"|contains?|is\s+not|is"
    pattern = (r"\b(?:(" + _REMOVE + r"|keep\w*|select\w*|retain\w*|filter\w*|only|return\w*)\s+(?:\w+\s+){0,3}?)?"
               + _RECORD_NOUNS + r"\s+(?:where|whose|with|that\s+have|having)\s+(?:the\s+|a\s+|an\s+)?" + _Q + "("
               + _FIELD + ")" + _Q + r"\s+(?:field\s+|value\s+)?(?:is\s+)?(" + comparison + r")\s+"
               r"([\"'`\u201c\u2018][^\"'`\u201d\u2019]*[\"'`\u201d\u2019]|-?\d+(?:\.\d+)?|\w+)")
    for m in re.finditer(pattern, text, _I):
        operator_text = m.group(3).lower().strip()
        if operator_text in ("is", "equals", "equal"):
            condition = "eq"
        elif operator_text == "is not":
            condition = "ne"
        elif operator_text.startswith("contain"):
            condition = "contains"
        else:
            condition = next(code for p, code in _COMPARISONS if re.fullmatch(p, operator_text, _I))
        if m.group(1) and re.match(_REMOVE, m.group(1), _I):
            condition = _NEGATE.get(condition, condition)
        steps.append(_step("filter_records", m, {"field": m.group(2), "condition": condition,
                                                 "value": _value(m.group(4))}))
    return steps


@detector
def _count_by(text: str, ctx: Context) -> list[Step]:
    if not ctx.records:
        return []
    steps = []
    pattern = (r"\b(?:count\w*|group\w*|tally\w*|number\s+of)\s+(?:the\s+)?(?:" + _RECORD_NOUNS + r"\s+)?"
               r"(?:by|per|for\s+each)\s+(?:the\s+|their\s+|its\s+)?" + _Q + "(" + _FIELD + ")" + _Q)
    for m in re.finditer(pattern, text, _I):
        if m.group(1).lower() not in _GENERIC_WORDS:
            steps.append(_step("count_by_field", m, {"field": m.group(1)}))
    return steps


_AGGREGATE_MEASURES = [(r"total|sum", "sum"), (r"average|mean|avg", "mean"), (r"maximum|max|highest|largest", "max"),
                       (r"minimum|min|lowest|smallest", "min")]
_MEASURE = "|".join(f"(?:{p})" for p, _ in _AGGREGATE_MEASURES)
_GROUPING = r"(?:per|by|for\s+each|for\s+every|in\s+each|grouped\s+by|broken\s+down\s+by)"


def _measure(word: str) -> str:
    return next(code for p, code in _AGGREGATE_MEASURES if re.fullmatch(p, word, _I))


@detector
def _aggregate_by(text: str, ctx: Context) -> list[Step]:
    """Group-by totals: "the total revenue per region", "sum amount by customer.country", "group the orders by
    region and sum their amount"."""
    if not ctx.records:
        return []
    steps = []
    article = r"(?:the\s+|their\s+|its\s+|all\s+)?"
    direct = (r"\b(" + _MEASURE + r")\s+(?:of\s+)?" + article + _Q + "(" + _FIELD + ")" + _Q
              + r"(?:\s+(?:field|column|values?))?\s+(?:of\s+(?:the\s+)?" + _RECORD_NOUNS + r"\s+)?" + _GROUPING
              + r"\s+" + article + _Q + "(" + _FIELD + ")" + _Q)
    for m in re.finditer(direct, text, _I):
        value_field, group = m.group(2), m.group(3)
        if value_field.lower() in _GENERIC_WORDS or group.lower() in _GENERIC_WORDS:
            continue
        steps.append(_step("aggregate_by_field", m, {"group": group, "field": value_field,
                                                     "measure": _measure(m.group(1))}))
    grouped = (r"\bgroup\w*\s+(?:the\s+)?(?:\w+\s+){0,2}?(?:by|on)\s+" + article + _Q + "(" + _FIELD
               + ")" + _Q + r"\s+(?:and|then)\s+(?:\w+\s+){0,2}?(" + _MEASURE + r")\s+(?:up\s+)?(?:of\s+)?" + article
               + _Q + "(" + _FIELD + ")" + _Q)
    for m in re.finditer(grouped, text, _I):
        group, value_field = m.group(1), m.group(3)
        if value_field.lower() in _GENERIC_WORDS:
            continue
        steps.append(_step("aggregate_by_field", m, {"group": group, "field": value_field,
                                                     "measure": _measure(m.group(2))}))
    return steps


_OPERATIONS = [(r"\*|x|times|multiplied\s+by", "multiply"), (r"\+|plus", "add"), (r"-|minus", "subtract"),
               (r"/|divided\s+by", "divide")]
_OPERATION = "|".join(f"(?:{p})" for p, _ in _OPERATIONS)


def _operation(word: str) -> str:
    return next(code for p, code in _OPERATIONS if re.fullmatch(p, word.strip(), _I))


@detector
def _compute_field(text: str, ctx: Context) -> list[Step]:
    """A field computed from two others: "add a field total = price * quantity", "compute amount as price times
    quantity", "multiply price by quantity into a field called total"."""
    if not ctx.records:
        return []
    steps = []
    article = r"(?:a\s+|an\s+|the\s+)?(?:new\s+)?(?:field\s+|column\s+)?"
    named = (r"\b(?:comput\w*|calculat\w*|add\w*|deriv\w*|set)\s+" + article + _Q + "(" + _FIELD + ")" + _Q
             + r"\s+(?:field\s+|column\s+)?(?:as|=|equal\s+to|to\s+be|being)\s+(?:the\s+)?" + _Q + "(" + _FIELD + ")"
             + _Q + r"\s*(" + _OPERATION + r")\s*(?:the\s+)?" + _Q + "(" + _FIELD + ")" + _Q)
    for m in re.finditer(named, text, _I):
        steps.append(_step("compute_field", m, {"target": m.group(1), "left": m.group(2),
                                                "operation": _operation(m.group(3)), "right": m.group(4)}))
    into = (r"(?:\s+(?:field\s+)?(?:to\s+get|into|as|giving|and\s+(?:call|store|save)\s+(?:it|the\s+result)\s+"
            r"(?:in|as)?)\s*" + article + r"(?:called\s+|named\s+)?" + _Q + "(" + _FIELD + ")" + _Q + ")?")
    verb = (r"\bmultipl\w*\s+(?:the\s+|each\s+)?" + _Q + "(" + _FIELD + ")" + _Q + r"\s+(?:field\s+)?by\s+(?:the\s+)?"
            + _Q + "(" + _FIELD + ")" + _Q + into)
    for m in re.finditer(verb, text, _I):
        if m.group(2).lower() in _GENERIC_WORDS or re.fullmatch(_NUM, m.group(2), _I):
            continue
        steps.append(_step("compute_field", m, {"target": m.group(3) or "total", "left": m.group(1),
                                                "operation": "multiply", "right": m.group(2)}))
    return steps


@detector
def _take_items(text: str, ctx: Context) -> list[Step]:
    """ "keep the first 3 numbers", "return only the last 2 items", "the top 3 products by price" (sorted by the
    field, highest first, then the first N)."""
    steps = []
    pattern = (r"\b(?:keep\w*|take\w*|return\w*|show\w*|list\w*|output\w*|select\w*|pick\w*|only|get)\s+(?:only\s+)?"
               r"(?:the\s+)?(first|last|top|bottom)\s+" + _NUM + r"\s+([A-Za-z_]\w*)\b"
               r"(?:\s+(?:by|with\s+the\s+(?:highest|largest|biggest))\s+(?:their\s+|the\s+)?" + _Q + "(" + _FIELD + ")"
               + _Q + ")?")
    for m in re.finditer(pattern, text, _I):
        noun = m.group(3).lower()
        if noun in ("characters", "chars", "letters", "words", "lines", "sentences") and not ctx.words_input:
            continue  # parts of a text: truncation, not a list
        if noun in _GENERIC_WORDS - {"numbers", "values", "items", "records", "rows"}:
            continue
        numeric = noun in ("numbers", "values", "scores", "elements", "integers", "readings", "measurements")
        records = (ctx.records or not numeric) and noun not in ("words",) and not numeric
        key = "records" if records else ("words" if noun == "words" else "numbers")
        end = "last" if m.group(1).lower() in ("last", "bottom") else "first"
        if m.group(4) and records:
            descending = m.group(1).lower() == "top"
            steps.append(Step("sort_records", {"field": m.group(4), "descending": descending}, m.start(),
                              m.start() + 1, m.group(0)))
            end = "first"
        elif m.group(1).lower() in ("top", "bottom") and not records and key == "numbers":
            steps.append(Step("sort_items", {"key": key, "descending": m.group(1).lower() == "top"}, m.start(),
                              m.start() + 1, m.group(0)))
            end = "first"
        steps.append(Step("take_items", {"key": key, "count": max(0, int(to_number(m.group(2)))), "end": end},
                          m.start() + 2, m.end(), m.group(0)))
    return steps


@detector
def _csv(text: str, ctx: Context) -> list[Step]:
    steps = []
    for m in re.finditer(r"\b(?:pars\w*|read\w*|load\w*|convert\w*|turn\w*)?\s*(?:the\s+|a\s+|some\s+)?csv\b",
                         text, _I):
        around = text[max(0, m.start() - 80): m.end() + 80]
        delimiter = ";" if re.search(r"semicolon", around, _I) else ("\t" if re.search(r"\btabs?\b|tsv", around, _I)
                                                                      else ",")
        steps.append(_step("parse_csv", m, {"delimiter": delimiter}))
        break
    return steps


def detect_steps(text: str, records: bool = False) -> list[Step]:
    """Every step the rules find, ordered, overlaps and duplicates removed (adapters are the planner's job);
    ``records`` says the data are records even when the text does not (acceptance cases show it)."""
    ctx = Context.of(text)
    if records and not ctx.records:
        ctx = Context(ctx.text, True, True, ctx.numeric, ctx.words_input)
    found: list[Step] = []
    for function in _DETECTORS:
        found.extend(function(text, ctx))
    found.sort(key=lambda s: (s.start, -(s.end - s.start)))
    kept: list[Step] = []
    for step in found:
        if any(other.start <= step.start and step.end <= other.end and (other.end - other.start) >
               (step.end - step.start) and other.template != step.template for other in found):
            continue  # inside a longer match of another kind ("remove duplicate words" is not "words")
        if any(other.template == step.template and other.params == step.params for other in kept):
            continue
        kept.append(step)
    names = {step.template for step in kept}
    if "word_frequency" in names:
        kept = [s for s in kept if s.template != "count_words"]
    if "filter_records" in names or "sort_records" in names:
        kept = [s for s in kept if not (s.template in ("filter_numbers", "sort_items") and any(
            r.template in ("filter_records", "sort_records") and abs(r.start - s.start) < 40 for r in kept))]
    return _order(text, kept)


def _order(text: str, steps: list[Step]) -> list[Step]:
    """Position order, with 'X after Y' reversed and reducers after the transforms of the same data."""
    after = re.search(r"\b(?:after|once)\b", text, _I)
    if after:
        before = [s for s in steps if s.start < after.start()]
        later = [s for s in steps if s.start >= after.start()]
        if before and later:
            steps = later + before
    transforms = [s for s in steps if s.template not in REDUCERS]
    reducers = [s for s in steps if s.template in REDUCERS]
    return transforms + reducers
