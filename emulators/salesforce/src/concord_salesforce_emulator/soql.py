"""A SOQL subset: parsed with a grammar, checked against the describes, evaluated in Python.

Anything outside the subset fails to parse and becomes MALFORMED_QUERY: a client never gets a
plausible but wrong answer. As in SOQL, AND and OR cannot be mixed without parentheses, text
compares case-insensitively, and `!=` matches nulls.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, VisitError

from concord_salesforce_emulator import ids, timefmt
from concord_salesforce_emulator.errors import SalesforceError, malformed_query
from concord_salesforce_emulator.schema import Schema, SObjectType

_GRAMMAR = r"""
start: "SELECT"i select_list "FROM"i NAME where? order? limit? offset?
select_list: count | count_field | path ("," path)*
count: "COUNT"i "(" ")"
count_field: "COUNT"i "(" path ")"
path: NAME ("." NAME)*
where: "WHERE"i condition
?condition: simple
          | simple ("AND"i simple)+ -> and_
          | simple ("OR"i simple)+ -> or_
?simple: "NOT"i simple -> not_
       | "(" condition ")"
       | comparison
comparison: path OP value -> compare
          | path "LIKE"i STRING -> like
          | path "IN"i "(" value ("," value)* ")" -> in_
          | path "NOT"i "IN"i "(" value ("," value)* ")" -> not_in
value: STRING -> string
     | NUMBER -> number
     | DATETIME -> datetime
     | DATE -> date
     | DATE_LITERAL -> date_literal
     | "TRUE"i -> true
     | "FALSE"i -> false
     | "NULL"i -> null
order: "ORDER"i "BY"i ordering ("," ordering)*
ordering: path DIRECTION? nulls?
nulls: "NULLS"i NULLS_WHERE
limit: "LIMIT"i INT
offset: "OFFSET"i INT
OP: "!=" | "<>" | "<=" | ">=" | "=" | "<" | ">"
DIRECTION: /asc|desc/i
NULLS_WHERE: /first|last/i
DATE_LITERAL.4: /(today|yesterday|tomorrow|(last|next)_n_days:\d+)(?![A-Za-z0-9_])/i
DATETIME.3: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})/
DATE.2: /\d{4}-\d{2}-\d{2}/
NUMBER: /-?\d+(\.\d+)?/
STRING: /'(\\.|[^'\\])*'/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
%import common.INT
%import common.WS
%ignore WS
"""

_PARSER = Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)


# ---- the query as parsed ------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    kind: str  # string number datetime date date_literal boolean null
    value: Any


@dataclass(frozen=True)
class Compare:
    path: tuple[str, ...]
    op: str
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # and or not
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Ordering:
    path: tuple[str, ...]
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class Query:
    sobject: str
    fields: tuple[tuple[str, ...], ...] | None  # None: COUNT()
    where: Any | None
    order: tuple[Ordering, ...]
    limit: int | None
    offset: int | None
    count_of: tuple[str, ...] | None = None  # COUNT(field): one AggregateResult row


_UNESCAPE = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
    "'": "'",
    '"': '"',
    "\\": "\\",
    "_": "\\_",
    "%": "\\%",
}


def _unescape(token: str) -> str:
    body = token[1:-1]

    def replace(match: re.Match[str]) -> str:
        char = match.group(1)
        if char not in _UNESCAPE:
            raise malformed_query(f"Invalid string literal '{token}'. Illegal character sequence")
        return _UNESCAPE[char]

    return re.sub(r"\\(.)", replace, body)


@v_args(inline=True)
class _Build(Transformer[Token, Query]):
    def start(self, select: Any, sobject: Token, *clauses: Any) -> Query:
        parts = {kind: value for kind, value in clauses}
        count_of = select[1] if isinstance(select, tuple) and select[:1] == ("COUNT",) else None
        return Query(
            sobject=str(sobject),
            fields=((count_of,) if count_of else select),
            count_of=count_of,
            where=parts.get("where"),
            order=parts.get("order", ()),
            limit=parts.get("limit"),
            offset=parts.get("offset"),
        )

    def select_list(self, *items: Any) -> Any:
        if len(items) == 1 and (items[0] is None or items[0][:1] == ("COUNT",)):
            return items[0]
        return tuple(items)

    def count_field(self, path: tuple[str, ...]) -> tuple[Any, ...]:
        return ("COUNT", path)

    def count(self) -> None:
        return None

    def path(self, *names: Token) -> tuple[str, ...]:
        return tuple(str(n) for n in names)

    def where(self, condition: Any) -> tuple[str, Any]:
        return ("where", condition)

    def and_(self, *parts: Any) -> BoolOp:
        return BoolOp("and", parts)

    def or_(self, *parts: Any) -> BoolOp:
        return BoolOp("or", parts)

    def not_(self, part: Any) -> BoolOp:
        return BoolOp("not", (part,))

    def compare(self, path: tuple[str, ...], op: Token, value: Literal) -> Compare:
        return Compare(path, "!=" if str(op) == "<>" else str(op), (value,))

    def like(self, path: tuple[str, ...], pattern: Token) -> Compare:
        return Compare(path, "like", (Literal("string", _unescape(str(pattern))),))

    def in_(self, path: tuple[str, ...], *values: Literal) -> Compare:
        return Compare(path, "in", values)

    def not_in(self, path: tuple[str, ...], *values: Literal) -> Compare:
        return Compare(path, "not in", values)

    def string(self, token: Token) -> Literal:
        return Literal("string", _unescape(str(token)))

    def number(self, token: Token) -> Literal:
        text = str(token)
        return Literal("number", float(text) if "." in text else int(text))

    def datetime(self, token: Token) -> Literal:
        return Literal("datetime", timefmt.parse_datetime(str(token)))

    def date(self, token: Token) -> Literal:
        try:
            return Literal("date", dt.date.fromisoformat(str(token)))
        except ValueError:
            raise malformed_query(
                f"line 1:0 no viable alternative at character '{token}'"
            ) from None

    def date_literal(self, token: Token) -> Literal:
        return Literal("date_literal", str(token).upper())

    def true(self) -> Literal:
        return Literal("boolean", True)

    def false(self) -> Literal:
        return Literal("boolean", False)

    def null(self) -> Literal:
        return Literal("null", None)

    def order(self, *orderings: Ordering) -> tuple[str, tuple[Ordering, ...]]:
        return ("order", orderings)

    def ordering(self, path: tuple[str, ...], *rest: Any) -> Ordering:
        descending = False
        nulls_last: bool | None = None
        for item in rest:
            if isinstance(item, Token) and item.type == "DIRECTION":
                descending = str(item).lower() == "desc"
            else:
                nulls_last = item
        if nulls_last is None:
            # SOQL's default: nulls first ascending, last descending.
            nulls_last = descending
        return Ordering(path, descending, nulls_last)

    def nulls(self, where: Token) -> bool:
        return str(where).lower() == "last"

    def limit(self, value: Token) -> tuple[str, int]:
        return ("limit", int(value))

    def offset(self, value: Token) -> tuple[str, int]:
        return ("offset", int(value))


def parse(text: str) -> Query:
    try:
        tree = _PARSER.parse(text)
        return _Build().transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, SalesforceError):
            raise error.orig_exc from None
        raise malformed_query(f"\n{text}\nERROR: {error.orig_exc}") from None
    except UnexpectedCharacters as error:
        raise malformed_query(
            _position(text, error, f"unexpected token: '{text[error.pos_in_stream or 0]}'")
        ) from None
    except UnexpectedInput as error:
        token = getattr(error, "token", None)
        shown = "<EOF>" if token is None or token.type == "$END" else str(token)
        raise malformed_query(_position(text, error, f"unexpected token: '{shown}'")) from None
    except LarkError as error:
        raise malformed_query(f"\n{text}\nERROR: {error}") from None


def _position(text: str, error: UnexpectedInput, message: str) -> str:
    column = (error.column or 1) if isinstance(error.column, int) else 1
    return f"\n{text}\n{' ' * (column - 1)}^\nERROR at Row:{error.line}:Column:{column}\n{message}"


# ---- checking and evaluating --------------------------------------------------------------------


Record = dict[str, Any]
Resolver = Callable[[str], tuple[str, Record] | None]  # id -> (type name, fields)


@dataclass(frozen=True)
class _Column:
    """A selected or filtered path resolved against the describes."""

    path: tuple[str, ...]
    canonical: tuple[str, ...]
    field: dict[str, Any]  # the describe of the last field (on the first target type)
    targets: tuple[str, ...]  # parent types a relationship step may point at


class PlannedQuery:
    def __init__(self, query: Query, schema: Schema, text: str) -> None:
        sobject = schema.get(query.sobject)
        if sobject is None:
            raise SalesforceError(
                "INVALID_TYPE",
                f"\n{text}\n{' ' * text.lower().find(query.sobject.lower())}^\n"
                f"ERROR at Row:1:Column:{text.lower().find(query.sobject.lower()) + 1}\n"
                f"sObject type '{query.sobject}' is not supported. If you are attempting to use "
                "a custom object, be sure to append the '__c' after the entity name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
            )
        self.query = query
        self.schema = schema
        self.sobject = sobject
        self.columns: list[_Column] = []
        seen: set[tuple[str, ...]] = set()
        for path in query.fields or ():
            column = self._resolve(path)
            key = tuple(p.lower() for p in column.canonical)
            if key in seen:
                raise malformed_query(f"duplicate field selected: {'.'.join(path)}")
            seen.add(key)
            self.columns.append(column)
        if query.where is not None:
            self._check(query.where)
        self.orderings = [(self._resolve(o.path), o) for o in query.order]
        if query.offset is not None and query.offset > 2000:
            raise SalesforceError(
                "NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000"
            )

    def _resolve(self, path: tuple[str, ...]) -> _Column:
        current: list[SObjectType] = [self.sobject]
        canonical: list[str] = []
        for position, name in enumerate(path):
            last = position == len(path) - 1
            if last:
                for candidate in current:
                    described = candidate.field(name)
                    if described is not None:
                        canonical.append(described["name"])
                        return _Column(
                            path, tuple(canonical), described, tuple(c.name for c in current)
                        )
                raise _no_column(".".join(path), current[0].name)
            relationship = None
            for candidate in current:
                relationship = candidate.relationship(name)
                if relationship is not None:
                    break
            if relationship is None:
                raise SalesforceError(
                    "INVALID_FIELD",
                    f"Didn't understand relationship '{name}' in field path. If you are "
                    "attempting to use a custom relationship, be sure to append the '__r' after "
                    "the custom relationship name. Please reference your WSDL or the describe "
                    "call for the appropriate names.",
                )
            canonical.append(relationship["relationshipName"])
            current = [t for t in (self.schema.get(n) for n in relationship["referenceTo"]) if t]
            if not current:
                raise _no_column(".".join(path), self.sobject.name)
        raise malformed_query("empty field path")

    def _check(self, node: Any) -> None:
        if isinstance(node, BoolOp):
            for part in node.parts:
                self._check(part)
            return
        column = self._resolve(node.path)
        for literal in node.values:
            _coerce_literal(column, literal, node.op)

    # ---- evaluation --------------------------------------------------------------------------

    def run(self, records: Iterable[Record], resolve: Resolver) -> list[Record]:
        """Matching records, ordered, after OFFSET and LIMIT (as raw field dicts)."""
        where = self.query.where
        today = timefmt.now().date()
        matched = [r for r in records if where is None or self._test(where, r, resolve, today)]
        # One stable sort per ordering, last first: each value is computed once per record.
        for column, ordering in reversed(self.orderings):
            keyed = [
                (_sort_key(_normalise(column.field, self.value_of(r, column, resolve))), r)
                for r in matched
            ]
            present = [pair for pair in keyed if pair[0] is not None]
            present.sort(key=lambda pair: pair[0], reverse=ordering.descending)
            nulls = [r for key, r in keyed if key is None]
            ordered = [r for _, r in present]
            matched = ordered + nulls if ordering.nulls_last else nulls + ordered
        start = self.query.offset or 0
        end = None if self.query.limit is None else start + self.query.limit
        return matched[start:end]

    def value_of(self, record: Record, column: _Column, resolve: Resolver) -> Any:
        current: Record | None = record
        for step, name in enumerate(column.canonical):
            if current is None:
                return None
            if step == len(column.canonical) - 1:
                return _field_value(current, name)
            reference = self._reference_field(column, step)
            target = current.get(reference)
            found = resolve(target) if target else None
            current = found[1] if found else None
        return None

    def _reference_field(self, column: _Column, step: int) -> str:
        sobject: SObjectType | None = self.sobject
        for index in range(step + 1):
            assert sobject is not None
            relationship = sobject.relationship(column.canonical[index])
            assert relationship is not None
            if index == step:
                return str(relationship["name"])
            sobject = self.schema.get(relationship["referenceTo"][0])
        raise AssertionError("unreachable")

    def _test(self, node: Any, record: Record, resolve: Resolver, today: dt.date) -> bool:
        if isinstance(node, BoolOp):
            if node.op == "and":
                return all(self._test(p, record, resolve, today) for p in node.parts)
            if node.op == "or":
                return any(self._test(p, record, resolve, today) for p in node.parts)
            return not self._test(node.parts[0], record, resolve, today)
        column = self._resolve(node.path)
        actual = _normalise(column.field, self.value_of(record, column, resolve))
        if node.op in ("in", "not in"):
            wanted = [_coerce_literal(column, v, "=") for v in node.values]
            hit = any(_equals(actual, w, today) for w in wanted)
            return hit if node.op == "in" else not hit
        expected = _coerce_literal(column, node.values[0], node.op)
        if node.op == "like":
            return actual is not None and _like(str(expected), str(actual))
        if node.op == "=":
            return _equals(actual, expected, today)
        if node.op == "!=":
            return not _equals(actual, expected, today)
        if actual is None or expected is None:
            return False
        return _ordered(actual, node.op, expected, today)

    def render(self, record: Record, sobject: str, resolve: Resolver, version: str) -> Record:
        out: Record = {"attributes": _attributes(sobject, record["Id"], version)}
        for column in self.columns:
            self._render_column(out, record, column, 0, resolve, version)
        return out

    def _render_column(
        self,
        out: Record,
        record: Record,
        column: _Column,
        step: int,
        resolve: Resolver,
        version: str,
    ) -> None:
        name = column.canonical[step]
        if step == len(column.canonical) - 1:
            value = _field_value(record, name)
            described = self.sobject.field(name) if step == 0 else None
            if described is not None and described["type"] == "base64" and value is not None:
                # As the REST API does: a blob field answers with its URL, never its bytes.
                value = f"{_attributes(self.sobject.name, record['Id'], version)['url']}/{name}"
            out[name] = value
            return
        target = record.get(self._reference_field(column, step))
        found = resolve(target) if target else None
        if found is None:
            out[name] = None
            return
        parent_type, parent = found
        nested = out.get(name)
        if not isinstance(nested, dict):
            nested = {"attributes": _attributes(parent_type, parent["Id"], version)}
            out[name] = nested
        self._render_column(nested, parent, column, step + 1, resolve, version)


def _attributes(sobject: str, record_id: str, version: str) -> dict[str, str]:
    return {"type": sobject, "url": f"/services/data/v{version}/sobjects/{sobject}/{record_id}"}


def _field_value(record: Record, name: str) -> Any:
    if name in record:
        return record[name]
    lowered = name.lower()
    for key, value in record.items():
        if key.lower() == lowered:
            return value
    return None


def _no_column(name: str, sobject: str) -> SalesforceError:
    return SalesforceError(
        "INVALID_FIELD",
        f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a custom "
        "field, be sure to append the '__c' after the custom field name. Please reference your "
        "WSDL or the describe call for the appropriate names.",
    )


_TEXT = frozenset(
    {
        "string",
        "textarea",
        "email",
        "phone",
        "url",
        "picklist",
        "combobox",
        "multipicklist",
        "encryptedstring",
    }
)
_NUMBER = frozenset({"int", "double", "currency", "percent"})


def _coerce_literal(column: _Column, literal: Literal, op: str) -> Any:
    """The literal as a comparable value for the field's type, or the error SOQL gives."""
    kind = column.field["type"]
    name = ".".join(column.path)
    if literal.kind == "null":
        if op not in ("=", "!=", "in", "not in"):
            raise malformed_query(f"invalid operator on null for field {name}")
        return None
    if op == "like" and kind not in _TEXT and kind not in ("id", "reference"):
        raise SalesforceError(
            "INVALID_QUERY_FILTER_OPERATOR",
            f"invalid operator on field: {name}. LIKE can only be used on text fields",
        )
    if kind in ("id", "reference"):
        if literal.kind != "string":
            raise _type_error(name, "id")
        if op == "like":
            return literal.value
        normal = ids.normalize(literal.value)
        if normal is None:
            raise SalesforceError(
                "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {literal.value}"
            )
        return normal
    if kind in _TEXT:
        if literal.kind != "string":
            raise _type_error(name, "string")
        return literal.value
    if kind == "boolean":
        if literal.kind != "boolean" or op not in ("=", "!=", "in", "not in"):
            raise _type_error(name, "boolean")
        return literal.value
    if kind in _NUMBER:
        if literal.kind != "number":
            raise _type_error(name, "number")
        return float(literal.value)
    if kind == "datetime":
        if literal.kind == "datetime":
            return literal.value
        if literal.kind == "date_literal":
            return literal
        raise _type_error(name, "dateTime")
    if kind == "date":
        if literal.kind == "date":
            return literal.value
        if literal.kind == "date_literal":
            return literal
        raise _type_error(name, "date")
    raise malformed_query(f"field {name} can not be filtered in a query call")


def _type_error(name: str, kind: str) -> SalesforceError:
    return malformed_query(
        f"value of filter criterion for field '{name}' must be of type {kind} and should not be "
        "enclosed in quotes"
        if kind != "string"
        else f"value of filter criterion for field '{name}' must be of type string and should be "
        "enclosed in quotes"
    )


def _normalise(field: dict[str, Any], value: Any) -> Any:
    if value is None:
        return None
    kind = field["type"]
    if kind == "datetime":
        return timefmt.parse_datetime(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind in _NUMBER:
        return float(value)
    return value


def _range(literal: Literal, today: dt.date) -> tuple[dt.date, dt.date]:
    """A date literal as [first day, day after the last day)."""
    text = literal.value
    if text == "TODAY":
        return today, today + dt.timedelta(days=1)
    if text == "YESTERDAY":
        return today - dt.timedelta(days=1), today
    if text == "TOMORROW":
        return today + dt.timedelta(days=1), today + dt.timedelta(days=2)
    count = int(text.split(":")[1])
    if text.startswith("LAST_N_DAYS"):
        # From midnight n days ago up to now, today included.
        return today - dt.timedelta(days=count), today + dt.timedelta(days=1)
    return today + dt.timedelta(days=1), today + dt.timedelta(days=count + 1)


def _as_date(value: dt.date | dt.datetime) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def _equals(actual: Any, expected: Any, today: dt.date) -> bool:
    if isinstance(expected, Literal):
        if actual is None:
            return False
        low, high = _range(expected, today)
        return low <= _as_date(actual) < high
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.lower() == expected.lower()
    return bool(actual == expected)


def _ordered(actual: Any, op: str, expected: Any, today: dt.date) -> bool:
    if isinstance(expected, Literal):
        low, high = _range(expected, today)
        day = _as_date(actual)
        if isinstance(actual, dt.datetime):
            # A datetime compares with the literal's bounds at midnight UTC.
            start = dt.datetime.combine(low, dt.time(), dt.UTC)
            stop = dt.datetime.combine(high, dt.time(), dt.UTC)
            return {
                "<": actual < start,
                "<=": actual < stop,
                ">": actual >= stop,
                ">=": actual >= start,
            }[op]
        return {"<": day < low, "<=": day < high, ">": day >= high, ">=": day >= low}[op]
    left, right = _sort_key(actual), _sort_key(expected)
    result: bool = {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[
        op
    ]
    return result


def _sort_key(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _like(pattern: str, value: str) -> bool:
    regex = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            regex += re.escape(pattern[index + 1])
            index += 2
            continue
        regex += ".*" if char == "%" else "." if char == "_" else re.escape(char)
        index += 1
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def plan(text: str, schema: Schema) -> PlannedQuery:
    return PlannedQuery(parse(text), schema, text)
