"""Validation errors in plain words: one line ``config: <dotted.key>: <why>`` per problem.

pydantic says "Input should be a valid tuple" or "String should match pattern '^[A-Z...'";
a user needs "must be a list of strings like ["State"] (got 'State')". Each kind of error
pydantic raises for this configuration gets its own words here, and the value given is
shown with it, except for the keys that may hold a secret (client secrets, tokens, webhook
secrets, sink URLs, the database URL), whose value is never shown, whatever its type.

Pure: no I/O, reads no environment (:mod:`auditor.config.environment` names the variables).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from auditor.config.settings import Settings

# The last level of a key whose value may be a secret, wherever it appears.
SECRET_KEYS = frozenset(
    {"client_secret", "token", "secret", "urls", "password", "secret_digest_key"}
)
# A URL is secret outside [[targets]]: a database URL holds a password, a sink URL a token.
_URL_SECRET_SECTIONS = frozenset({"database", "alerts"})

# The patterns of the models, in words.
_PATTERNS = {
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$": (
        "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    ),
}

_WORDS = {
    "string_type": "must be text in quotes",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "tuple_type": 'must be a list like ["a", "b"]',
    "list_type": 'must be a list like ["a", "b"]',
    "set_type": 'must be a list like ["a", "b"]',
    "model_type": "must be a table of keys",
    "dict_type": "must be a table of keys",
    "model_attributes_type": "must be a table of keys",
    "path_type": "must be a file path in quotes",
    "missing": "required",
}


def dotted(loc: Sequence[int | str]) -> str:
    """``("targets", 0, "url")`` -> ``targets[0].url``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def is_secret(loc: Sequence[int | str]) -> bool:
    """Whether the key at ``loc`` may hold a secret (its value is never shown)."""
    names = [str(p).lower() for p in loc if isinstance(p, str)]
    if any(name in SECRET_KEYS for name in names):
        return True
    return bool(names) and names[-1] == "url" and names[0] in _URL_SECRET_SECTIONS


def shown(value: Any) -> str:
    """A value as the user wrote it, for ``(got ...)``: TOML words, cut to one short line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)
    return text if len(text) <= 60 else text[:57] + "..."


def section_fields(loc: Sequence[int | str]) -> list[str]:
    """Names allowed at the place of an unknown key, for a 'did you mean' hint."""
    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        if inner and not hasattr(annotation, "model_fields"):
            annotation = next((a for a in inner if hasattr(a, "model_fields")), annotation)
        model = annotation
    return list(getattr(model, "model_fields", {}))


def why(item: Mapping[str, Any], loc: Sequence[int | str]) -> str:
    """The plain words for one pydantic error at ``loc``, with the value when it may be shown."""
    kind = str(item["type"])
    ctx = item.get("ctx") or {}
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), section_fields(loc), n=1)
        return "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    if kind in ("value_error", "assertion_error"):
        # Our own validators' words: they show the value themselves where it is safe.
        return str(item["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        text = f"must be one of {ctx.get('expected', '')}"
    elif kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        text = _PATTERNS.get(pattern, f"must match the pattern {pattern}")
    elif kind == "string_too_short":
        size = ctx.get("min_length", 1)
        text = "must not be empty" if size == 1 else f"must be at least {size} characters long"
    elif kind == "string_too_long":
        text = f"must be at most {ctx.get('max_length')} characters long"
    elif kind == "too_short":
        size = ctx.get("min_length", 1)
        text = f"must hold at least {size} item{'s' if size != 1 else ''}"
    elif kind in _WORDS:
        text = _WORDS[kind]
    else:
        message = str(item["msg"])
        text = message[:1].lower() + message[1:]
    if is_secret(loc) or "input" not in item:
        return text
    return f"{text} (got {shown(item['input'])})"


def problems_of(error: ValidationError) -> list[str]:
    """One line per problem, in pydantic's order, each told once."""
    found: list[tuple[tuple[int | str, ...], str, str]] = []
    for item in error.errors(include_url=False):
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # Union members and Annotated wrappers add their type name to the location.
        loc = [p for p in loc if not ((isinstance(p, str) and p[:1].isupper()) or p == "str")]
        line = f"config: {dotted(loc) or '(top level)'}: {why(item, loc)}"
        found.append((tuple(loc), str(item["type"]), line))
    locs = [loc for loc, _, _ in found]
    lines = [
        line
        for loc, kind, line in found
        # "must hold at least 1 item" after its items were refused tells nothing more.
        if not (kind == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs))
    ]
    return list(dict.fromkeys(lines))
