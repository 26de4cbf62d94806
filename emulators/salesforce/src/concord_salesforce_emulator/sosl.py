"""A SOSL subset: `FIND {term} [IN ALL|EMAIL|NAME|PHONE FIELDS] [RETURNING Obj(fields [WHERE …]
[ORDER BY …] [LIMIT n]), …] [LIMIT n]`.

The part inside each `RETURNING Obj(...)` is a SOQL field list and clauses, so it is planned by
the SOQL grammar. Matching is by whole value or whole word, case-insensitively, with `*` as a
wildcard, which is how SOSL treats an email address or a name.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from lark import Lark, Token, Tree
from lark.exceptions import LarkError

from concord_salesforce_emulator import soql
from concord_salesforce_emulator.errors import SalesforceError
from concord_salesforce_emulator.schema import Schema, SObjectType

_GRAMMAR = r"""
start: "FIND"i TERM scope? returning? limit?
scope: "IN"i SCOPE "FIELDS"i
returning: "RETURNING"i spec ("," spec)*
spec: NAME ("(" INNER ")")?
limit: "LIMIT"i INT
TERM: /\{(\\.|[^}\\])*\}/
SCOPE: /all|email|name|phone/i
INNER: /([^()]|\([^()]*\))+/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
%import common.INT
%import common.WS
%ignore WS
"""

_PARSER = Lark(_GRAMMAR, parser="lalr")
_DEFAULT_TYPES = ("Account", "Contact", "Lead", "Opportunity", "User")
_CLAUSE = re.compile(r"\b(WHERE|ORDER\s+BY|LIMIT|OFFSET)\b", re.IGNORECASE)


class Records(Protocol):
    def live(self, sobject: SObjectType, include_deleted: bool = False) -> Any: ...


def _malformed(message: str) -> SalesforceError:
    return SalesforceError("MALFORMED_SEARCH", message)


def search(
    text: str, schema: Schema, org: Records, resolve: soql.Resolver, version: str
) -> list[dict[str, Any]]:
    if "{" not in text:
        raise _malformed("No search term found. The search term must be enclosed in braces.")
    try:
        tree = _PARSER.parse(text)
    except LarkError:
        raise _malformed(f"line 1:0 mismatched input in search: {text}") from None
    term = ""
    scope = "ALL"
    specs: list[tuple[str, str | None]] = []
    overall_limit: int | None = None
    for child in tree.children:
        if isinstance(child, Token) and child.type == "TERM":
            # Escapes stay until the term is parsed: `\(` or `\"` is a character, not syntax.
            term = child[1:-1].strip()
        elif not isinstance(child, Tree):
            continue
        elif child.data == "scope":
            scope = str(child.children[0]).upper()
        elif child.data == "returning":
            for spec in child.children:
                assert isinstance(spec, Tree)
                name = str(spec.children[0])
                inner = str(spec.children[1]) if len(spec.children) > 1 else None
                specs.append((name, inner))
        elif child.data == "limit":
            overall_limit = int(str(child.children[0]))
    if len(re.sub(r'[*"\\]', "", term).strip()) < 2:
        raise _malformed("search term must be longer than one character")
    if not specs:
        specs = [(name, None) for name in _DEFAULT_TYPES]
    matcher = _matcher(term)
    results: list[dict[str, Any]] = []
    for name, inner in specs:
        sobject = schema.get(name)
        if sobject is None:
            raise SalesforceError("INVALID_TYPE", f"sObject type '{name}' is not supported.")
        planned = soql.plan(_soql(sobject.name, inner), schema)
        fields = _searched_fields(sobject, scope)
        hits = [r.fields for r in org.live(sobject) if matcher([r.fields.get(f) for f in fields])]
        for row in planned.run(hits, resolve):
            results.append(planned.render(row, sobject.name, resolve, version))
    return results[:overall_limit] if overall_limit is not None else results


def _soql(sobject: str, inner: str | None) -> str:
    if inner is None or not inner.strip():
        return f"SELECT Id FROM {sobject}"
    clause = _CLAUSE.search(inner)
    if clause is None:
        return f"SELECT {inner} FROM {sobject}"
    return f"SELECT {inner[: clause.start()]} FROM {sobject} {inner[clause.start() :]}"


def _searched_fields(sobject: SObjectType, scope: str) -> list[str]:
    fields = []
    for described in sobject.fields.values():
        kind = described["type"]
        is_name = described["nameField"] or described["name"] in (
            "FirstName",
            "LastName",
            "Company",
        )
        if (
            (scope in ("ALL", "EMAIL") and kind == "email")
            or (scope in ("ALL", "NAME") and is_name)
            or (scope in ("ALL", "PHONE") and kind == "phone")
            or (scope == "ALL" and kind in ("string", "textarea", "url"))
        ):
            fields.append(described["name"])
    return fields


def _matcher(term: str) -> Any:
    """SOSL's search expression over a record's searched fields.

    Words and "exact phrases" joined by AND, OR, AND NOT and parentheses (juxtaposed terms mean
    AND). A quoted phrase matches its words in order and next to each other within one field;
    `*` is a wildcard."""
    tokens: list[str] = re.findall(r'"(?:\\.|[^"\\])*"|\(|\)|(?:\\.|[^\s()\\])+', term)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def either() -> Any:
        parts = [both()]
        while (peek() or "").upper() == "OR":
            take()
            parts.append(both())
        return lambda text: any(p(text) for p in parts)

    def both() -> Any:
        parts = [single()]
        while peek() is not None and peek() != ")" and (peek() or "").upper() != "OR":
            negate = False
            if (peek() or "").upper() == "AND":
                take()
                if (peek() or "").upper() == "NOT":
                    take()
                    negate = True
            part = single()
            parts.append((lambda p: lambda text: not p(text))(part) if negate else part)
        return lambda text: all(p(text) for p in parts)

    def single() -> Any:
        token = take() if peek() is not None else ""
        if token == "(":
            inner = either()
            if peek() == ")":
                take()
            return inner
        phrase = token[1:-1] if len(token) > 1 and token.startswith('"') else token
        words = [w for w in re.split(r"(?<!\\)\s+", phrase) if w]
        if not words:
            return lambda text: True
        pattern = re.compile(
            # `@` separates tokens (an email's domain is a word), `.` and `-` do not.
            "(?<![\\w.-])" + r"[ \t]+".join(_word(w) for w in words) + "(?![\\w.@-])",
            re.IGNORECASE,
        )
        return lambda text: pattern.search(text) is not None

    expression = either()

    def matches(values: list[Any]) -> bool:
        # One text per record; a line per field, so a phrase never spans two fields.
        text = "\n".join(v for v in values if isinstance(v, str))
        return bool(text) and bool(expression(text))

    return matches


def _word(word: str) -> str:
    """One search word as a regex: `*` any characters, `?` one, `\\x` the character x."""
    out = ""
    index = 0
    while index < len(word):
        char = word[index]
        if char == "\\" and index + 1 < len(word):
            out += re.escape(word[index + 1])
            index += 2
            continue
        out += ".*?" if char == "*" else "." if char == "?" else re.escape(char)
        index += 1
    return out
