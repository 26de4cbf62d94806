"""SOQL as Salesforce's SOQL and SOSL Reference defines it for reading data.

Parsed with a grammar, checked against the describes, evaluated in Python: field paths both
ways (child-to-parent dotted paths, parent-to-child subqueries), polymorphic TYPEOF, aliases,
aggregates with GROUP BY / ROLLUP / CUBE and HAVING, date functions and date literals,
FIELDS(), semi- and anti-joins, INCLUDES/EXCLUDES, ORDER BY … NULLS, LIMIT/OFFSET and the
clauses that do not change what is read (FOR VIEW, WITH SECURITY_ENFORCED, USING SCOPE).

Anything outside the language fails to parse and becomes MALFORMED_QUERY: a client never gets a
plausible but wrong answer. As in SOQL, AND and OR cannot be mixed without parentheses, text
compares case-insensitively, and `!=` matches nulls.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, VisitError

from concord_salesforce_emulator import ids, timefmt
from concord_salesforce_emulator.errors import SalesforceError, malformed_query
from concord_salesforce_emulator.schema import Schema, SObjectType

_AGGREGATES = ("COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX")
_DATE_FUNCTIONS = (
    "CALENDAR_MONTH",
    "CALENDAR_QUARTER",
    "CALENDAR_YEAR",
    "DAY_IN_MONTH",
    "DAY_IN_WEEK",
    "DAY_IN_YEAR",
    "DAY_ONLY",
    "FISCAL_MONTH",
    "FISCAL_QUARTER",
    "FISCAL_YEAR",
    "HOUR_IN_DAY",
    "WEEK_IN_MONTH",
    "WEEK_IN_YEAR",
)
# Functions that change how a value is shown, not which rows are read.
_PASS_THROUGH = ("TOLABEL", "FORMAT", "CONVERTCURRENCY", "CONVERTTIMEZONE", "GROUPING")
_FUNCTIONS = "|".join(_AGGREGATES + _DATE_FUNCTIONS + _PASS_THROUGH)
# Checked against the full list when parsed: the pattern only has to find the token.
_DATE_LITERAL = "|".join(
    (
        r"[A-Z_]+_N_[A-Z_]+:\d+",
        r"N_[A-Z_]+_AGO:\d+",
        "TODAY|YESTERDAY|TOMORROW",
        "(LAST|THIS|NEXT)_(WEEK|MONTH|QUARTER|YEAR|FISCAL_QUARTER|FISCAL_YEAR)",
        "(LAST|NEXT)_90_DAYS",
    )
)

_GRAMMAR = rf"""
start: query
query: "SELECT"i select_list "FROM"i path alias? using? where? with_? group? having? order? \
       limit? offset? for_*
select_list: select_item ("," select_item)*
?select_item: path alias? -> field_item
            | function alias? -> function_item
            | "(" query ")" -> subquery
            | "TYPEOF"i NAME when+ else_? "END"i -> typeof
            | "FIELDS"i "(" FIELDS_KIND ")" -> fields_item
function: FUNCTION "(" (path | function)? ")"
when: "WHEN"i NAME "THEN"i path ("," path)*
else_: "ELSE"i path ("," path)*
alias: NAME
path: NAME ("." NAME)*
using: "USING"i "SCOPE"i NAME
where: "WHERE"i condition
with_: "WITH"i WITH_WHAT
group: "GROUP"i "BY"i operand ("," operand)* -> group
     | "GROUP"i "BY"i ROLLUP_CUBE "(" operand ("," operand)* ")" -> group_special
having: "HAVING"i condition
?condition: simple
          | simple ("AND"i simple)+ -> and_
          | simple ("OR"i simple)+ -> or_
?simple: "NOT"i simple -> not_
       | "(" condition ")"
       | comparison
?operand: path | function
comparison: operand OP value -> compare
          | operand "LIKE"i value -> like
          | operand "NOT"i "LIKE"i value -> not_like
          | operand "IN"i "(" value ("," value)* ")" -> in_
          | operand "NOT"i "IN"i "(" value ("," value)* ")" -> not_in
          | operand "IN"i "(" query ")" -> semi_join
          | operand "NOT"i "IN"i "(" query ")" -> anti_join
          | operand "INCLUDES"i "(" value ("," value)* ")" -> includes
          | operand "EXCLUDES"i "(" value ("," value)* ")" -> excludes
value: STRING -> string
     | NUMBER -> number
     | DATETIME -> datetime
     | DATE -> date
     | DATE_LITERAL -> date_literal
     | "TRUE"i -> true
     | "FALSE"i -> false
     | "NULL"i -> null
order: "ORDER"i "BY"i ordering ("," ordering)*
ordering: operand DIRECTION? nulls?
nulls: "NULLS"i NULLS_WHERE
limit: "LIMIT"i INT
offset: "OFFSET"i INT
for_: "FOR"i FOR_WHAT ("," FOR_WHAT)*
OP: "!=" | "<>" | "<=" | ">=" | "=" | "<" | ">"
DIRECTION.2: /(asc|desc)(?![A-Za-z0-9_])/i
NULLS_WHERE.2: /(first|last)(?![A-Za-z0-9_])/i
ROLLUP_CUBE.2: /(rollup|cube)(?=\s*\()/i
FIELDS_KIND: /all|standard|custom/i
WITH_WHAT: /security_enforced|user_mode|system_mode/i
FOR_WHAT: /view|reference|update/i
FUNCTION.5: /({_FUNCTIONS})(?=\s*\()/i
DATE_LITERAL.4: /({_DATE_LITERAL})(?![A-Za-z0-9_])/i
DATETIME.3: /\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}:\d{{2}}:\d{{2}}(\.\d+)?(Z|[+-]\d{{2}}:?\d{{2}})/
DATE.2: /\d{{4}}-\d{{2}}-\d{{2}}/
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
class Function:
    name: str  # upper case
    argument: tuple[str, ...] | Function | None


Operand = tuple[str, ...] | Function


@dataclass(frozen=True)
class Compare:
    operand: Operand
    op: str
    values: tuple[Literal, ...] = ()
    subquery: Query | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return self.operand if isinstance(self.operand, tuple) else ()


@dataclass(frozen=True)
class BoolOp:
    op: str  # and or not
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Ordering:
    operand: Operand
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class FieldItem:
    path: tuple[str, ...]
    alias: str | None = None


@dataclass(frozen=True)
class FunctionItem:
    function: Function
    alias: str | None = None


@dataclass(frozen=True)
class SubqueryItem:
    query: Query


@dataclass(frozen=True)
class TypeofItem:
    relationship: str
    whens: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]
    otherwise: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class FieldsItem:
    kind: str  # ALL STANDARD CUSTOM


SelectItem = FieldItem | FunctionItem | SubqueryItem | TypeofItem | FieldsItem


@dataclass(frozen=True)
class Query:
    sobject: str
    items: tuple[SelectItem, ...]
    where: Any | None = None
    order: tuple[Ordering, ...] = ()
    limit: int | None = None
    offset: int | None = None
    alias: str | None = None
    group: tuple[Operand, ...] = ()
    group_kind: str | None = None  # ROLLUP CUBE
    having: Any | None = None
    scope: str | None = None
    modes: tuple[str, ...] = ()  # FOR VIEW/REFERENCE/UPDATE, WITH SECURITY_ENFORCED

    @property
    def count_only(self) -> bool:
        """`SELECT COUNT() FROM …`: the answer is totalSize alone."""
        return (
            len(self.items) == 1
            and isinstance(self.items[0], FunctionItem)
            and self.items[0].function.name == "COUNT"
            and self.items[0].function.argument is None
        )

    @property
    def fields(self) -> tuple[tuple[str, ...], ...] | None:
        """The plain field paths selected (None for COUNT())."""
        if self.count_only:
            return None
        return tuple(i.path for i in self.items if isinstance(i, FieldItem))


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
    def start(self, query: Query) -> Query:
        return query

    def query(
        self, items: tuple[SelectItem, ...], sobject: tuple[str, ...], *clauses: Any
    ) -> Query:
        parts: dict[str, Any] = {}
        modes: list[str] = []
        for kind, value in clauses:
            if kind == "mode":
                modes.extend(value)
            else:
                parts[kind] = value
        group = parts.get("group", (None, ()))
        return Query(
            sobject=".".join(sobject),
            items=items,
            alias=parts.get("alias"),
            where=parts.get("where"),
            order=parts.get("order", ()),
            limit=parts.get("limit"),
            offset=parts.get("offset"),
            group=group[1],
            group_kind=group[0],
            having=parts.get("having"),
            scope=parts.get("scope"),
            modes=tuple(modes),
        )

    def select_list(self, *items: SelectItem) -> tuple[SelectItem, ...]:
        return items

    def field_item(self, path: tuple[str, ...], alias: Any = None) -> FieldItem:
        return FieldItem(path, alias[1] if alias else None)

    def function_item(self, function: Function, alias: Any = None) -> FunctionItem:
        return FunctionItem(function, alias[1] if alias else None)

    def function(self, name: Token, argument: Any = None) -> Function:
        return Function(str(name).upper(), argument)

    def subquery(self, query: Query) -> SubqueryItem:
        return SubqueryItem(query)

    def typeof(self, relationship: Token, *branches: Any) -> TypeofItem:
        whens = tuple(b[1] for b in branches if b[0] == "when")
        otherwise = next((b[1] for b in branches if b[0] == "else"), ())
        return TypeofItem(str(relationship), whens, otherwise)

    def when(self, sobject: Token, *paths: tuple[str, ...]) -> tuple[str, Any]:
        return ("when", (str(sobject), paths))

    def else_(self, *paths: tuple[str, ...]) -> tuple[str, Any]:
        return ("else", paths)

    def fields_item(self, kind: Token) -> FieldsItem:
        return FieldsItem(str(kind).upper())

    def alias(self, name: Token) -> tuple[str, str]:
        return ("alias", str(name))

    def path(self, *names: Token) -> tuple[str, ...]:
        return tuple(str(n) for n in names)

    def using(self, scope: Token) -> tuple[str, str]:
        return ("scope", str(scope))

    def with_(self, what: Token) -> tuple[str, list[str]]:
        return ("mode", [f"WITH {str(what).upper()}"])

    def for_(self, *what: Token) -> tuple[str, list[str]]:
        return ("mode", [f"FOR {str(w).upper()}" for w in what])

    def group(self, *operands: Operand) -> tuple[str, Any]:
        return ("group", (None, operands))

    def group_special(self, kind: Token, *operands: Operand) -> tuple[str, Any]:
        return ("group", (str(kind).upper(), operands))

    def having(self, condition: Any) -> tuple[str, Any]:
        return ("having", condition)

    def where(self, condition: Any) -> tuple[str, Any]:
        return ("where", condition)

    def and_(self, *parts: Any) -> BoolOp:
        return BoolOp("and", parts)

    def or_(self, *parts: Any) -> BoolOp:
        return BoolOp("or", parts)

    def not_(self, part: Any) -> BoolOp:
        return BoolOp("not", (part,))

    def compare(self, operand: Operand, op: Token, value: Literal) -> Compare:
        return Compare(operand, "!=" if str(op) == "<>" else str(op), (value,))

    def like(self, operand: Operand, pattern: Literal) -> Compare:
        return Compare(operand, "like", (pattern,))

    def not_like(self, operand: Operand, pattern: Literal) -> BoolOp:
        return BoolOp("not", (Compare(operand, "like", (pattern,)),))

    def in_(self, operand: Operand, *values: Literal) -> Compare:
        return Compare(operand, "in", values)

    def not_in(self, operand: Operand, *values: Literal) -> Compare:
        return Compare(operand, "not in", values)

    def semi_join(self, operand: Operand, query: Query) -> Compare:
        return Compare(operand, "in", (), query)

    def anti_join(self, operand: Operand, query: Query) -> Compare:
        return Compare(operand, "not in", (), query)

    def includes(self, operand: Operand, *values: Literal) -> Compare:
        return Compare(operand, "includes", values)

    def excludes(self, operand: Operand, *values: Literal) -> Compare:
        return Compare(operand, "excludes", values)

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
        text = str(token).upper()
        name = text.split(":")[0]
        if name not in _DATE_LITERALS:
            raise malformed_query(f"line 1:0 no viable alternative at character '{token}'")
        return Literal("date_literal", text)

    def true(self) -> Literal:
        return Literal("boolean", True)

    def false(self) -> Literal:
        return Literal("boolean", False)

    def null(self) -> Literal:
        return Literal("null", None)

    def order(self, *orderings: Ordering) -> tuple[str, tuple[Ordering, ...]]:
        return ("order", orderings)

    def ordering(self, operand: Operand, *rest: Any) -> Ordering:
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
        return Ordering(operand, descending, nulls_last)

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


def _caret(text: str, needle: str, message: str) -> str:
    """Salesforce's error text: the query, a caret under the offending name, then the reason."""
    found = text.lower().find(needle.lower())
    column = max(found, 0)
    return f"\n{text}\n{' ' * column}^\nERROR at Row:1:Column:{column + 1}\n{message}"


# ---- checking and evaluating --------------------------------------------------------------------


Record = dict[str, Any]
Resolver = Callable[[str], tuple[str, Record] | None]  # id -> (type name, fields)
Source = Callable[[str], Iterable[Record]]  # type name -> its live records


def _no_source(name: str) -> Iterable[Record]:
    return ()


# `Who.Type`: the type a polymorphic reference points at, not a field of any one target.
_TYPE_FIELD: dict[str, Any] = {"name": "Type", "type": "string"}

_NAME_FIELDS = {
    n.lower(): n
    for n in (
        "Id",
        "Name",
        "FirstName",
        "LastName",
        "Alias",
        "Email",
        "Phone",
        "Title",
        "Type",
        "Username",
        "IsActive",
        "RecordTypeId",
        "UserRoleId",
        "ProfileId",
        "LastReferencedDate",
        "LastViewedDate",
        "NameOrAlias",
        "SmallPhotoUrl",
        "MediumPhotoUrl",
        "FullPhotoUrl",
        "CommunityNickname",
    )
}

# Child relationships whose rows are Tasks and Events seen through one lens.
_ACTIVITY_VIEWS = {"ActivityHistory": True, "OpenActivity": False}


@dataclass(frozen=True)
class _Column:
    """A selected or filtered path resolved against the describes."""

    path: tuple[str, ...]
    canonical: tuple[str, ...]
    field: dict[str, Any]  # the describe of the last field (on the first target type)
    targets: tuple[str, ...]  # parent types a relationship step may point at


@dataclass
class _Child:
    """A parent-to-child subquery: the planned inner query and how children point at a parent."""

    name: str
    planned: PlannedQuery
    link: str  # the child's field holding the parent's id
    activity: bool | None = None  # ActivityHistories (True) / OpenActivities (False)


@dataclass
class _Typeof:
    item: TypeofItem
    reference: dict[str, Any]
    branches: dict[str, list[_Column]] = field(default_factory=dict)
    otherwise: list[_Column] = field(default_factory=list)


@dataclass(frozen=True)
class ModstampWalk:
    """Rows to read in SystemModstamp order, from `floor` (None: the first) until `limit` match."""

    floor: dt.datetime | None
    limit: int


@dataclass(frozen=True)
class IndexAccess:
    """Rows to read instead of the whole type: by Id, or through an indexed field's values."""

    field: str  # the field's name as described
    keys: tuple[str, ...]  # 18-character Ids, or the field's values in lower case


@dataclass(frozen=True)
class _Wanted:
    """An IN list, coerced: a set lookup per row (text compares case-insensitively, so strings
    are kept in lower case), plus any date literals, which match a range of values."""

    keys: frozenset[Any]
    ranges: tuple[Literal, ...]

    @staticmethod
    def of(values: list[Any]) -> _Wanted:
        keys = {
            v.lower() if isinstance(v, str) else v for v in values if not isinstance(v, Literal)
        }
        ranges = tuple(v for v in values if isinstance(v, Literal))
        return _Wanted(frozenset(keys), ranges)

    def holds(self, actual: Any, today: dt.date) -> bool:
        # As `_equals`: a null matches a null literal, text matches ignoring case, anything else
        # by equality (a str never equals a non-str, so one set holds both).
        key = actual.lower() if isinstance(actual, str) else actual
        try:
            if key in self.keys:
                return True
        except TypeError:  # an unhashable value (a compound field) equals no literal
            pass
        return any(_equals(actual, r, today) for r in self.ranges)


class PlannedQuery:
    def __init__(
        self,
        query: Query,
        schema: Schema,
        text: str,
        sobject: SObjectType | None = None,
    ) -> None:
        self.query = query
        self.schema = schema
        self.text = text
        if sobject is None and "." in query.sobject:
            raise malformed_query(
                _caret(text, query.sobject, f"unexpected token: '{query.sobject}'")
            )
        found = sobject or schema.get(query.sobject)
        if found is None:
            raise SalesforceError(
                "INVALID_TYPE",
                _caret(
                    text,
                    query.sobject,
                    f"sObject type '{query.sobject}' is not supported. If you are attempting to "
                    "use a custom object, be sure to append the '__c' after the entity name. "
                    "Please reference your WSDL or the describe call for the appropriate names.",
                ),
            )
        self.sobject: SObjectType = found
        self._resolved: dict[tuple[str, ...], _Column] = {}
        self._functions: dict[tuple[Function, bool], _Column] = {}
        self.items: list[SelectItem] = []
        self.columns: list[_Column] = []
        self.children: dict[int, _Child] = {}
        self.typeofs: dict[int, _Typeof] = {}
        self.joins: dict[int, PlannedQuery] = {}
        # A comparison's literals as comparable values, coerced once per query (by node id):
        # coercing them per row made `Id IN (200 ids)` cost rows x literals id checksums.
        self._expected: dict[int, Any] = {}
        self._wanted: dict[int, _Wanted] = {}
        self._expand_items()
        seen: set[tuple[str, ...]] = set()
        for index, item in enumerate(self.items):
            if isinstance(item, FieldItem):
                column = self._resolve(item.path)
                key = tuple(p.lower() for p in column.canonical)
                if key in seen:
                    raise malformed_query(f"duplicate field selected: {'.'.join(item.path)}")
                seen.add(key)
                self.columns.append(column)
            elif isinstance(item, FunctionItem):
                self._check_function(item.function)
            elif isinstance(item, SubqueryItem):
                self.children[index] = self._plan_child(item.query)
            elif isinstance(item, TypeofItem):
                self.typeofs[index] = self._plan_typeof(item)
        self.is_aggregate = bool(query.group) or any(
            isinstance(i, FunctionItem) and _is_aggregate(i.function) for i in self.items
        )
        if self.is_aggregate and not query.count_only:
            self._check_grouping()
            if not query.group and query.limit is not None:
                # The reference: LIMIT with an aggregate function needs a GROUP BY.
                raise malformed_query(
                    _caret(
                        text, "LIMIT", "LIMIT is not allowed on an aggregate query without GROUP BY"
                    )
                )
        if query.where is not None:
            self._check(query.where, aggregates=False)
        if query.having is not None:
            if not self.is_aggregate:
                raise malformed_query("HAVING clause requires a GROUP BY clause or aggregate")
            self._check(query.having, aggregates=True)
        for ordering in query.order:
            self._operand_column(ordering.operand, aggregates=self.is_aggregate)
        if query.offset is not None and query.offset > 2000:
            raise SalesforceError(
                "NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000"
            )

    # ---- planning ----------------------------------------------------------------------------

    def _expand_items(self) -> None:
        explicit = {
            tuple(p.lower() for p in i.path) for i in self.query.items if isinstance(i, FieldItem)
        }
        for item in self.query.items:
            if not isinstance(item, FieldsItem):
                self.items.append(item)
                continue
            if item.kind != "STANDARD" and (self.query.limit is None or self.query.limit > 200):
                raise malformed_query(
                    _caret(
                        self.text,
                        "FIELDS",
                        "The SOQL FIELDS function must have a LIMIT of at most 200",
                    )
                )
            for described in self.sobject.describe["fields"]:
                # Some recorded custom fields say custom=false; the `__c` suffix does not lie.
                custom = bool(described.get("custom")) or described["name"].endswith("__c")
                if (item.kind == "STANDARD" and custom) or (item.kind == "CUSTOM" and not custom):
                    continue
                key = (described["name"].lower(),)
                if key not in explicit:
                    explicit.add(key)
                    self.items.append(FieldItem((described["name"],)))

    def _resolve(self, path: tuple[str, ...]) -> _Column:
        # Evaluation resolves the same paths for every row: resolve each once.
        column = self._resolved.get(path)
        if column is None:
            column = self._resolved[path] = self._resolve_path(path)
        return column

    def _resolve_path(self, path: tuple[str, ...]) -> _Column:
        own = {self.sobject.name.lower(), (self.query.alias or "").lower()}
        if len(path) > 1 and path[0].lower() in own and not self.sobject.relationship(path[0]):
            # `SELECT Contact.LastName FROM Contact`: the object's own name may lead a path.
            path = path[1:]
        current: list[SObjectType] = [self.sobject]
        canonical: list[str] = []
        for position, name in enumerate(path):
            last = position == len(path) - 1
            if last:
                if len(current) > 1 and name.lower() == "type":
                    # A polymorphic parent (Who, What) answers with the type it points at.
                    canonical.append("Type")
                    return _Column(
                        path, tuple(canonical), _TYPE_FIELD, tuple(c.name for c in current)
                    )
                for candidate in current:
                    described = candidate.field(name)
                    if described is not None:
                        canonical.append(described["name"])
                        return _Column(
                            path, tuple(canonical), described, tuple(c.name for c in current)
                        )
                raise self._no_column(".".join(path), current[0].name)
            relationship = None
            for candidate in current:
                relationship = candidate.relationship(name)
                if relationship is not None:
                    break
            if relationship is None:
                raise SalesforceError(
                    "INVALID_FIELD",
                    _caret(
                        self.text,
                        ".".join(path),
                        f"Didn't understand relationship '{name}' in field path. If you are "
                        "attempting to use a custom relationship, be sure to append the '__r' "
                        "after the custom relationship name. Please reference your WSDL or the "
                        "describe call for the appropriate names.",
                    ),
                )
            canonical.append(relationship["relationshipName"])
            current = [t for t in (self.schema.get(n) for n in relationship["referenceTo"]) if t]
            if not current:
                raise self._no_column(".".join(path), self.sobject.name)
        raise malformed_query("empty field path")

    def _no_column(self, name: str, sobject: str) -> SalesforceError:
        return SalesforceError(
            "INVALID_FIELD",
            _caret(
                self.text,
                name,
                f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a "
                "custom field, be sure to append the '__c' after the custom field name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
            ),
        )

    def _plan_child(self, query: Query) -> _Child:
        wanted = query.sobject.lower()
        owner, _, relation_name = wanted.rpartition(".")
        if owner in (self.sobject.name.lower(), (self.query.alias or "").lower()):
            # `(SELECT … FROM Account.Contacts)`: the parent's name may lead the relationship.
            wanted = relation_name
        for relation in self.sobject.describe.get("childRelationships", []):
            name = relation.get("relationshipName")
            if not name or name.lower() != wanted:
                continue
            child_type = str(relation["childSObject"])
            if child_type in _ACTIVITY_VIEWS:
                view = _activity_type(self.schema, child_type)
                planned = PlannedQuery(query, self.schema, self.text, view)
                return _Child(name, planned, str(relation["field"]), _ACTIVITY_VIEWS[child_type])
            sobject = self.schema.get(child_type)
            if sobject is None:
                continue
            planned = PlannedQuery(query, self.schema, self.text, sobject)
            return _Child(name, planned, str(relation["field"]))
        raise SalesforceError(
            "INVALID_TYPE",
            _caret(
                self.text,
                query.sobject,
                f"Didn't understand relationship '{query.sobject}' in FROM part of query call. "
                "If you are attempting to use a custom relationship, be sure to append the '__r' "
                "after the custom relationship name. Please reference your WSDL or the describe "
                "call for the appropriate names.",
            ),
        )

    def _plan_typeof(self, item: TypeofItem) -> _Typeof:
        reference = self.sobject.relationship(item.relationship)
        if reference is None:
            raise self._no_column(item.relationship, self.sobject.name)
        planned = _Typeof(item, reference)
        for type_name, paths in item.whens:
            target = self.schema.get(type_name)
            if target is None or target.name not in reference["referenceTo"]:
                raise SalesforceError(
                    "INVALID_TYPE",
                    _caret(self.text, type_name, f"sObject type '{type_name}' is not supported."),
                )
            inner = PlannedQuery(
                Query(target.name, tuple(FieldItem(p) for p in paths)), self.schema, self.text
            )
            planned.branches[target.name] = inner.columns
        for path in item.otherwise:
            # ELSE names fields of whatever the reference points at: one target having it will do.
            planned.otherwise.append(self._else_column(reference, path))
        return planned

    def _else_column(self, reference: dict[str, Any], path: tuple[str, ...]) -> _Column:
        for type_name in reference["referenceTo"]:
            target = self.schema.get(type_name)
            if target is not None and target.field(path[-1]) is not None:
                described = target.field(path[-1])
                assert described is not None
                return _Column(path, (described["name"],), described, (target.name,))
        if len(path) == 1 and path[0].lower() in _NAME_FIELDS:
            # The fields of Salesforce's `Name` object, which every polymorphic target maps onto.
            return _Column(path, (_NAME_FIELDS[path[0].lower()],), {"type": "string"}, ())
        raise self._no_column(".".join(path), reference["referenceTo"][0])

    def _check_function(self, function: Function, aggregates: bool = True) -> _Column:
        name = function.name
        if name in _AGGREGATES and not aggregates:
            raise malformed_query(
                _caret(self.text, name, "Aggregate functions are not allowed in this context")
            )
        argument = function.argument
        if argument is None:
            if name != "COUNT":
                raise malformed_query(_caret(self.text, name, f"{name}() needs a field"))
            return _Column((), (), {"type": "int", "name": "expr"}, ())
        inner = (
            self._check_function(argument, aggregates=False)
            if isinstance(argument, Function)
            else self._resolve(argument)
        )
        kind = inner.field["type"]
        if name in ("SUM", "AVG") and kind not in _NUMBER:
            raise malformed_query(
                _caret(
                    self.text,
                    name,
                    f"field {'.'.join(inner.path)} does not support aggregate operator {name}",
                )
            )
        if name in _DATE_FUNCTIONS:
            if kind not in ("date", "datetime"):
                raise malformed_query(
                    _caret(
                        self.text,
                        name,
                        f"{name} only accepts date or dateTime fields: {'.'.join(inner.path)}",
                    )
                )
            result_kind = "date" if name == "DAY_ONLY" else "int"
            return _Column(inner.path, inner.canonical, {"type": result_kind, "name": name}, ())
        if name in ("COUNT", "COUNT_DISTINCT", "GROUPING"):
            return _Column(inner.path, inner.canonical, {"type": "int", "name": name}, ())
        return inner

    def _operand_column(self, operand: Operand, aggregates: bool) -> _Column:
        if isinstance(operand, Function):
            key = (operand, aggregates)
            column = self._functions.get(key)
            if column is None:
                column = self._functions[key] = self._check_function(operand, aggregates)
            return column
        return self._resolve(operand)

    def _check_grouping(self) -> None:
        grouped = {
            _operand_key(self._operand_column(o, aggregates=False), o) for o in self.query.group
        }
        for item in self.items:
            if isinstance(item, FieldItem):
                key = _operand_key(self._resolve(item.path), item.path)
                if key not in grouped:
                    raise malformed_query(
                        _caret(
                            self.text,
                            ".".join(item.path),
                            f"Field must be grouped or aggregated: {'.'.join(item.path)}",
                        )
                    )
            elif (
                isinstance(item, FunctionItem)
                and not _is_aggregate(item.function)
                and item.function.name != "GROUPING"
            ):
                column = self._check_function(item.function)
                if _operand_key(column, item.function) not in grouped:
                    raise malformed_query(
                        f"Field must be grouped or aggregated: {item.function.name}"
                    )
            elif isinstance(item, SubqueryItem | TypeofItem):
                raise malformed_query("Nested queries cannot be combined with aggregates")

    def _check(self, node: Any, aggregates: bool) -> None:
        if isinstance(node, BoolOp):
            for part in node.parts:
                self._check(part, aggregates)
            return
        column = self._operand_column(node.operand, aggregates)
        if node.subquery is not None:
            inner = PlannedQuery(node.subquery, self.schema, self.text)
            if len(inner.columns) != 1 or inner.is_aggregate:
                raise malformed_query(
                    "The selected field in a semi join or anti join subquery must be one Id "
                    "or reference field"
                )
            if column.field["type"] not in ("id", "reference") or inner.columns[0].field[
                "type"
            ] not in ("id", "reference"):
                raise SalesforceError(
                    "INVALID_FIELD",
                    _caret(
                        self.text,
                        ".".join(column.path),
                        "Invalid semi join or anti join: only Id and reference fields may be "
                        "compared with a subquery",
                    ),
                )
            self.joins[id(node)] = inner
            return
        if node.op in ("includes", "excludes") and column.field["type"] != "multipicklist":
            raise SalesforceError(
                "INVALID_QUERY_FILTER_OPERATOR",
                f"invalid operator on field: {'.'.join(column.path)}. includes or excludes "
                "operator only valid on multipicklist field",
            )
        for literal in node.values:
            _coerce_literal(column, literal, node.op)

    # ---- evaluation --------------------------------------------------------------------------

    def run(
        self, records: Iterable[Record], resolve: Resolver, source: Source | None = None
    ) -> list[Record]:
        """Matching records, ordered, after OFFSET and LIMIT (as raw field dicts)."""
        context = _Context(resolve, source or _no_source, timefmt.now().date())
        matched = [r for r in records if self._matches(r, context)]
        matched = self._sort(matched, lambda r, operand: self._operand_value(operand, r, context))
        start = self.query.offset or 0
        end = None if self.query.limit is None else start + self.query.limit
        return matched[start:end]

    def _matches(self, record: Record, context: _Context) -> bool:
        where = self.query.where
        return where is None or self._test(where, record, context)

    def _sort(self, rows: list[Any], value: Callable[[Any, Operand], Any]) -> list[Any]:
        # One stable sort per ordering, last first: each value is computed once per row.
        for ordering in reversed(self.query.order):
            keyed = [(_sort_key(value(row, ordering.operand)), row) for row in rows]
            present = [pair for pair in keyed if pair[0] is not None]
            present.sort(key=lambda pair: pair[0], reverse=ordering.descending)
            nulls = [row for key, row in keyed if key is None]
            ordered = [row for _, row in present]
            rows = ordered + nulls if ordering.nulls_last else nulls + ordered
        return rows

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
            if (
                found is not None
                and column.field is _TYPE_FIELD
                and step == len(column.canonical) - 2
            ):
                return found[0]
        return None

    def _operand_value(self, operand: Operand, record: Record, context: _Context) -> Any:
        """A row's value for a path or a (non-aggregate) function, normalised for comparing."""
        if isinstance(operand, tuple):
            column = self._resolve(operand)
            return _normalise(column.field, self.value_of(record, column, context.resolve))
        argument = operand.argument
        if argument is None:
            return None
        inner = self._operand_value(argument, record, context)
        if operand.name in _DATE_FUNCTIONS:
            return _date_function(operand.name, inner)
        return inner

    def _shown_value(self, function: Function, record: Record, context: _Context) -> Any:
        """toLabel(), FORMAT(), convertCurrency(): the field's value as stored (one locale, one
        currency); a date function's value as JSON has it."""
        argument = function.argument
        if function.name in _PASS_THROUGH and isinstance(argument, tuple):
            return self.value_of(record, self._resolve(argument), context.resolve)
        value = self._operand_value(function, record, context)
        return value.isoformat() if isinstance(value, dt.date) else value

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

    def _test(self, node: Any, record: Record, context: _Context) -> bool:
        if isinstance(node, BoolOp):
            if node.op == "and":
                return all(self._test(p, record, context) for p in node.parts)
            if node.op == "or":
                return any(self._test(p, record, context) for p in node.parts)
            return not self._test(node.parts[0], record, context)
        actual = self._operand_value(node.operand, record, context)
        return self._compare(node, actual, context)

    def _compare(self, node: Compare, actual: Any, context: _Context) -> bool:
        today = context.today
        column = self._operand_column(node.operand, aggregates=True)
        if node.subquery is not None:
            found = actual is not None and ids.normalize(str(actual)) in context.join(
                self.joins[id(node)]
            )
            return found if node.op == "in" else not found
        if node.op in ("includes", "excludes"):
            chosen = {v.strip().lower() for v in str(actual or "").split(";") if v.strip()}
            hit = any(
                {v.strip().lower() for v in str(w.value).split(";")} <= chosen for w in node.values
            )
            return hit if node.op == "includes" else not hit
        if node.op in ("in", "not in"):
            hit = self._wanted_of(node, column).holds(actual, today)
            return hit if node.op == "in" else not hit
        expected = self._expected_of(node, column)
        if node.op == "like":
            return actual is not None and _like(str(expected), str(actual))
        if node.op == "=":
            return _equals(actual, expected, today)
        if node.op == "!=":
            return not _equals(actual, expected, today)
        if actual is None or expected is None:
            return False
        return _ordered(actual, node.op, expected, today)

    def _expected_of(self, node: Compare, column: _Column) -> Any:
        key = id(node)
        if key not in self._expected:
            self._expected[key] = _coerce_literal(column, node.values[0], node.op)
        return self._expected[key]

    def _wanted_of(self, node: Compare, column: _Column) -> _Wanted:
        wanted = self._wanted.get(id(node))
        if wanted is None:
            values = [_coerce_literal(column, v, "=") for v in node.values]
            wanted = self._wanted[id(node)] = _Wanted.of(values)
        return wanted

    # ---- index access ------------------------------------------------------------------------

    def index_access(self, indexed: Callable[[str, str], bool]) -> IndexAccess | None:
        """The index that answers this query, as Salesforce's optimizer would choose one.

        A conjunct of the top-level AND (or the whole WHERE) of the form `Id = / IN`, or
        `Field = / IN` on a text field the org indexes (`indexed(type, field)`: external ids,
        idLookup and unique fields), names every row that can match: reading those rows alone
        gives the same answer as a scan, because the whole WHERE is still tested on each. The
        conjunct with the fewest values wins; None means a table scan.
        """
        where = self.query.where
        if where is None:
            return None
        conjuncts = where.parts if isinstance(where, BoolOp) and where.op == "and" else (where,)
        best: IndexAccess | None = None
        for node in conjuncts:
            if (
                not isinstance(node, Compare)
                or node.subquery is not None
                or node.op not in ("=", "in")
                or not isinstance(node.operand, tuple)
            ):
                continue
            column = self._resolve(node.operand)
            if len(column.canonical) != 1:
                continue
            name = column.canonical[0]
            kind = column.field["type"]
            if node.op == "=":
                values = [self._expected_of(node, column)]
            else:
                values = [_coerce_literal(column, v, "=") for v in node.values]
            if kind == "id":
                # Every row has an Id: a null in the list matches nothing.
                keys = {v for v in values if v is not None}
            elif kind == "reference" and indexed(self.sobject.name, name) and None not in values:
                keys = {str(v).lower() for v in values}
            elif kind in _TEXT and indexed(self.sobject.name, name) and None not in values:
                # An index holds values, not nulls: `Field = null` has to scan.
                keys = {str(v).lower() for v in values}
            else:
                continue
            if best is None or len(keys) < len(best.keys):
                best = IndexAccess(name, tuple(sorted(keys)))
        return best

    def modstamp_walk(self) -> ModstampWalk | None:
        """Whether Salesforce's index on SystemModstamp answers this query in its own order:
        ORDER BY SystemModstamp ascending first, a LIMIT, nothing aggregated. The walk starts
        at the lowest SystemModstamp the WHERE admits (from its ANDed and ORed comparisons),
        and stops once LIMIT rows (plus OFFSET) match, so a change listing reads its page and
        not the whole type."""
        query = self.query
        if query.limit is None or not query.order or self.is_aggregate or query.count_only:
            return None
        first = query.order[0]
        if first.descending or not isinstance(first.operand, tuple):
            return None
        if self._resolve(first.operand).canonical != (MODSTAMP,):
            return None
        floor = self._modstamp_floor(query.where) if query.where is not None else None
        return ModstampWalk(floor, (query.offset or 0) + query.limit)

    def _modstamp_floor(self, node: Any) -> dt.datetime | None:
        if isinstance(node, BoolOp):
            if node.op == "and":
                floors = [f for f in map(self._modstamp_floor, node.parts) if f is not None]
                return max(floors) if floors else None
            if node.op == "or":
                each = [self._modstamp_floor(part) for part in node.parts]
                return None if any(f is None for f in each) else min(f for f in each if f)
            return None
        if (
            not isinstance(node, Compare)
            or node.subquery is not None
            or node.op not in (">", ">=", "=")
            or not isinstance(node.operand, tuple)
        ):
            return None
        column = self._resolve(node.operand)
        if column.canonical != (MODSTAMP,):
            return None
        value = self._expected_of(node, column)
        return value if isinstance(value, dt.datetime) else None

    def walk(
        self,
        ordered: Iterable[Record],
        limit: int,
        resolve: Resolver,
        source: Source | None = None,
    ) -> list[Record]:
        """The rows `run` needs from `ordered` (the type's rows in SystemModstamp order from
        the walk's floor): every match up to the `limit`-th, and the rows that share its
        SystemModstamp, which the rest of ORDER BY may still rank ahead of it."""
        context = _Context(resolve, source or _no_source, timefmt.now().date())
        found: list[Record] = []
        last: dt.datetime | None = None
        for record in ordered:
            stamp = _stored_datetime(record[MODSTAMP])
            if last is not None and stamp > last:
                break
            if self._matches(record, context):
                found.append(record)
                if last is None and len(found) >= limit:
                    last = stamp
        return found

    # ---- rendering plain rows ----------------------------------------------------------------

    def render(
        self,
        record: Record,
        sobject: str,
        resolve: Resolver,
        version: str,
        source: Source | None = None,
    ) -> Record:
        out: Record = {"attributes": _attributes(sobject, record["Id"], version)}
        context = _Context(resolve, source or _no_source, timefmt.now().date())
        for index, item in enumerate(self.items):
            if isinstance(item, FieldItem):
                column = self._resolve(item.path)
                self._render_column(out, record, column, 0, resolve, version)
            elif isinstance(item, FunctionItem):
                # toLabel(), FORMAT(), convertCurrency(): the value under the field's name.
                key = item.alias or _function_field(item.function) or item.function.name
                out[key] = self._shown_value(item.function, record, context)
            elif isinstance(item, SubqueryItem):
                child = self.children[index]
                out[child.name] = self._render_children(child, record, context, version)
            elif isinstance(item, TypeofItem):
                self._render_typeof(out, self.typeofs[index], record, resolve, version)
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
            if column.field is _TYPE_FIELD:
                value = record.get("__type__")
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
        if column.field is _TYPE_FIELD:
            parent = {**parent, "__type__": parent_type}
        nested = out.get(name)
        if not isinstance(nested, dict):
            nested = {"attributes": _attributes(parent_type, parent["Id"], version)}
            out[name] = nested
        self._render_column(nested, parent, column, step + 1, resolve, version)

    def _render_typeof(
        self, out: Record, typeof: _Typeof, record: Record, resolve: Resolver, version: str
    ) -> None:
        name = typeof.reference["relationshipName"]
        target = record.get(typeof.reference["name"])
        found = resolve(target) if target else None
        if found is None:
            out[name] = None
            return
        parent_type, parent = found
        columns = typeof.branches.get(parent_type, typeof.otherwise)
        nested: Record = {"attributes": _attributes(parent_type, parent["Id"], version)}
        for column in columns:
            nested[column.canonical[-1]] = _field_value(parent, column.canonical[-1])
        out[name] = nested

    def _render_children(
        self, child: _Child, parent: Record, context: _Context, version: str
    ) -> Record | None:
        planned = child.planned
        parent_id = parent["Id"]
        if child.activity is None:
            pool = (
                r
                for r in context.source(planned.sobject.name)
                if _field_value(r, child.link) == parent_id
            )
            typed: list[tuple[str, Record]] = [(planned.sobject.name, r) for r in pool]
        else:
            typed = _activities(context, parent_id, child.activity)
        kinds = {id(r): kind for kind, r in typed}
        rows = planned.run([r for _, r in typed], context.resolve, context.source)
        if not rows:
            # Salesforce answers an empty child relationship with null, not an empty list.
            return None
        records = []
        for row in rows:
            kind = planned.sobject.name if child.activity is not None else kinds[id(row)]
            records.append(planned.render(row, kind, context.resolve, version, context.source))
        return {"totalSize": len(records), "done": True, "records": records}

    # ---- aggregates --------------------------------------------------------------------------

    def aggregate(
        self, records: Iterable[Record], resolve: Resolver, source: Source | None = None
    ) -> list[Record]:
        """AggregateResult rows for a query with aggregate functions or GROUP BY."""
        context = _Context(resolve, source or _no_source, timefmt.now().date())
        matched = [r for r in records if self._matches(r, context)]
        group = self.query.group
        groups: dict[tuple[Any, ...], list[Record]] = {}
        for record in matched:
            key = tuple(_group_key(self._operand_value(o, record, context)) for o in group)
            groups.setdefault(key, []).append(record)
        if not group:
            groups = {(): matched}
        rows: list[tuple[dict[int, bool], list[Record]]] = [
            (dict.fromkeys(range(len(group)), False), members) for members in groups.values()
        ]
        if self.query.group_kind:
            for rolled in self._subtotals(len(group)):
                buckets: dict[tuple[Any, ...], list[Record]] = {}
                for key, members in groups.items():
                    kept = tuple(None if i in rolled else k for i, k in enumerate(key))
                    buckets.setdefault(kept, []).extend(members)
                for members in buckets.values():
                    rows.append(({i: i in rolled for i in range(len(group))}, members))
        having = self.query.having
        if having is not None:
            rows = [row for row in rows if self._test_group(having, row, context)]
        rows = self._sort(rows, lambda row, operand: self._group_value(operand, row, context))
        start = self.query.offset or 0
        end = None if self.query.limit is None else start + self.query.limit
        return [self._render_group(row, context) for row in rows[start:end]]

    def _subtotals(self, size: int) -> list[set[int]]:
        if self.query.group_kind == "ROLLUP":
            return [set(range(keep, size)) for keep in range(size - 1, -1, -1)]
        subsets = []
        for count in range(1, size + 1):
            for rolled in combinations(range(size), count):
                subsets.append(set(rolled))
        return subsets

    def _group_value(
        self,
        operand: Operand,
        row: tuple[dict[int, bool], list[Record]],
        context: _Context,
        raw: bool = False,
    ) -> Any:
        rolled, members = row
        if isinstance(operand, Function) and operand.name == "GROUPING":
            position = self._group_position(operand.argument)
            return 1 if position is not None and rolled.get(position) else 0
        if isinstance(operand, Function) and _is_aggregate(operand):
            return _aggregate_value(self, operand, members, context, raw)
        position = self._group_position(operand)
        if position is not None and rolled.get(position):
            return None
        if not members:
            return None
        if raw and isinstance(operand, tuple):
            column = self._resolve(operand)
            return self.value_of(members[0], column, context.resolve)
        return self._operand_value(operand, members[0], context)

    def _group_position(self, operand: Any) -> int | None:
        if operand is None:
            return None
        wanted = _operand_key(self._operand_column(operand, aggregates=False), operand)
        for position, grouped in enumerate(self.query.group):
            column = self._operand_column(grouped, aggregates=False)
            if _operand_key(column, grouped) == wanted:
                return position
        return None

    def _test_group(
        self, node: Any, row: tuple[dict[int, bool], list[Record]], context: _Context
    ) -> bool:
        if isinstance(node, BoolOp):
            if node.op == "and":
                return all(self._test_group(p, row, context) for p in node.parts)
            if node.op == "or":
                return any(self._test_group(p, row, context) for p in node.parts)
            return not self._test_group(node.parts[0], row, context)
        actual = self._group_value(node.operand, row, context)
        if isinstance(actual, int) and not isinstance(actual, bool):
            actual = float(actual)
        return self._compare(node, actual, context)

    def _render_group(self, row: tuple[dict[int, bool], list[Record]], context: _Context) -> Record:
        out: Record = {"attributes": {"type": "AggregateResult"}}
        unnamed = 0
        for item in self.items:
            if isinstance(item, FieldItem):
                column = self._resolve(item.path)
                key = item.alias or column.canonical[-1]
                out[key] = self._group_value(item.path, row, context, raw=True)
            elif isinstance(item, FunctionItem):
                if item.alias:
                    key = item.alias
                else:
                    key = f"expr{unnamed}"
                    unnamed += 1
                value = self._group_value(item.function, row, context, raw=True)
                out[key] = value.isoformat() if isinstance(value, dt.date) else value
        return out

    # ---- explain -----------------------------------------------------------------------------

    def explain(self, cardinality: int, total: int, access: IndexAccess | None) -> dict[str, Any]:
        """Salesforce's query-plan shape: one plan, the index the query was answered from (the
        same choice `run_query` makes), a table scan otherwise."""
        indexed = access is not None
        operation = "Index" if indexed else "TableScan"
        fields = [access.field] if access is not None else []
        notes = []
        if not indexed and self.query.where is not None:
            notes.append(
                {
                    "description": "Not considering filter for optimization because unindexed",
                    "fields": sorted({".".join(p) for p in _filter_paths(self.query.where)}),
                    "tableEnumOrId": self.sobject.name,
                }
            )
        return {
            "plans": [
                {
                    "cardinality": cardinality,
                    "fields": fields,
                    "leadingOperationType": operation,
                    "notes": notes,
                    "relativeCost": round((0.1 if indexed else 1.0) * max(total, 1) / 1000, 4)
                    or 0.0001,
                    "sobjectCardinality": total,
                    "sobjectType": self.sobject.name,
                }
            ],
            "sourceQuery": self.text,
        }


@dataclass
class _Context:
    resolve: Resolver
    source: Source
    today: dt.date
    _joins: dict[int, set[str]] = field(default_factory=dict)

    def join(self, planned: PlannedQuery) -> set[str]:
        """The ids a semi-join subquery selects, computed once per query run."""
        key = id(planned)
        if key not in self._joins:
            rows = planned.run(planned_records(planned, self), self.resolve, self.source)
            column = planned.columns[0]
            values = (planned.value_of(r, column, self.resolve) for r in rows)
            self._joins[key] = {n for n in (ids.normalize(str(v)) for v in values if v) if n}
        return self._joins[key]


def planned_records(planned: PlannedQuery, context: _Context) -> Iterable[Record]:
    return context.source(planned.sobject.name)


def _activity_type(schema: Schema, name: str) -> SObjectType:
    """ActivityHistory / OpenActivity: read-only views over Tasks and Events together."""
    task = schema.get("Task")
    event = schema.get("Event")
    assert task is not None
    assert event is not None
    fields = {**event.fields, **task.fields}
    describe = {"name": name, "fields": list(fields.values()), "childRelationships": []}
    return SObjectType(name, "", describe, fields)


def _activities(context: _Context, parent_id: str, history: bool) -> list[tuple[str, Record]]:
    now = timefmt.now()
    found: list[tuple[str, Record]] = []
    for kind in ("Task", "Event"):
        for record in context.source(kind):
            if parent_id not in (
                record.get("WhoId"),
                record.get("WhatId"),
                record.get("AccountId"),
            ):
                continue
            if kind == "Task":
                closed = bool(record.get("IsClosed")) or record.get("Status") == "Completed"
            else:
                end = record.get("EndDateTime")
                closed = end is not None and timefmt.parse_datetime(end) < now
            if closed == history:
                found.append((kind, record))
    return found


def _is_aggregate(function: Function) -> bool:
    return function.name in _AGGREGATES


def _function_field(function: Function) -> str | None:
    argument = function.argument
    while isinstance(argument, Function):
        argument = argument.argument
    return argument[-1] if argument else None


def _operand_key(column: _Column, operand: Any) -> tuple[str, ...]:
    prefix = (operand.name,) if isinstance(operand, Function) else ()
    return prefix + tuple(p.lower() for p in column.canonical)


def _group_key(value: Any) -> Any:
    # Grouping is case-insensitive, as text comparison is.
    return value.lower() if isinstance(value, str) else value


def _aggregate_value(
    planned: PlannedQuery,
    function: Function,
    members: list[Record],
    context: _Context,
    raw: bool,
) -> Any:
    argument = function.argument
    if argument is None:
        return len(members)
    pairs = []
    for record in members:
        value = planned._operand_value(argument, record, context)
        if value is None:
            continue
        original = value
        if raw and isinstance(argument, tuple):
            original = planned.value_of(record, planned._resolve(argument), context.resolve)
        pairs.append((value, original))
    name = function.name
    if name == "COUNT":
        return len(pairs)
    if name == "COUNT_DISTINCT":
        return len({_group_key(v) for v, _ in pairs})
    if not pairs:
        return None
    if name == "SUM":
        return float(sum(v for v, _ in pairs))
    if name == "AVG":
        return float(sum(v for v, _ in pairs)) / len(pairs)
    chosen = (min if name == "MIN" else max)(pairs, key=lambda pair: _sort_key(pair[0]))
    return chosen[1]


def _date_function(name: str, value: Any) -> Any:
    if value is None:
        return None
    moment: dt.datetime | None = value if isinstance(value, dt.datetime) else None
    day = _as_date(value)
    if name == "DAY_ONLY":
        return day
    if name == "HOUR_IN_DAY":
        return moment.hour if moment else 0
    if name in ("CALENDAR_MONTH", "FISCAL_MONTH"):
        return day.month
    if name in ("CALENDAR_QUARTER", "FISCAL_QUARTER"):
        return (day.month - 1) // 3 + 1
    if name in ("CALENDAR_YEAR", "FISCAL_YEAR"):
        return day.year
    if name == "DAY_IN_MONTH":
        return day.day
    if name == "DAY_IN_WEEK":
        return (day.weekday() + 1) % 7 + 1  # 1 is Sunday
    if name == "DAY_IN_YEAR":
        return day.timetuple().tm_yday
    if name == "WEEK_IN_MONTH":
        return (day.day - 1) // 7 + 1
    if name == "WEEK_IN_YEAR":
        return (day.timetuple().tm_yday - 1) // 7 + 1
    raise AssertionError(name)


def _filter_paths(node: Any) -> list[tuple[str, ...]]:
    if isinstance(node, BoolOp):
        return [p for part in node.parts for p in _filter_paths(part)]
    return [node.path] if isinstance(node, Compare) and node.path else []


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


# The audit field Salesforce indexes, which change listings filter and order by.
MODSTAMP = "SystemModstamp"
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


@functools.lru_cache(maxsize=1 << 16)
def _stored_datetime(text: str) -> dt.datetime:
    # A change listing compares every row's SystemModstamp two or three times per page, and
    # rows written together share one: parsed once each (a datetime is immutable).
    return timefmt.parse_datetime(text)


def _normalise(field: dict[str, Any], value: Any) -> Any:
    if value is None:
        return None
    kind = field["type"]
    if kind == "datetime":
        return _stored_datetime(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind in _NUMBER:
        return float(value)
    return value


_UNITS = ("DAY", "WEEK", "MONTH", "QUARTER", "YEAR")
_DATE_LITERALS = frozenset(
    {"TODAY", "YESTERDAY", "TOMORROW", "LAST_90_DAYS", "NEXT_90_DAYS"}
    | {
        f"{when}_{fiscal}{unit}"
        for when in ("LAST", "THIS", "NEXT")
        for unit in ("WEEK", "MONTH", "QUARTER", "YEAR")
        for fiscal in ("", "FISCAL_")
        if not fiscal or unit in ("QUARTER", "YEAR")
    }
    | {
        form.format(unit=f"{fiscal}{unit}S")
        for form in ("LAST_N_{unit}", "NEXT_N_{unit}", "N_{unit}_AGO")
        for unit in _UNITS
        for fiscal in ("", "FISCAL_")
        if not fiscal or unit in ("QUARTER", "YEAR")
    }
)


def _unit_start(today: dt.date, unit: str) -> dt.date:
    """The first day of the week (Sunday), month, quarter or year holding today.

    The fiscal year is the calendar year, as in an org that has not customised it."""
    if unit == "DAY":
        return today
    if unit == "WEEK":
        return today - dt.timedelta(days=(today.weekday() + 1) % 7)
    if unit == "MONTH":
        return today.replace(day=1)
    if unit == "QUARTER":
        return today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1)
    return today.replace(month=1, day=1)


def _shift(start: dt.date, unit: str, count: int) -> dt.date:
    if unit == "DAY":
        return start + dt.timedelta(days=count)
    if unit == "WEEK":
        return start + dt.timedelta(weeks=count)
    months = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}[unit] * count
    index = start.year * 12 + start.month - 1 + months
    year, month = divmod(index, 12)
    return start.replace(
        year=year, month=month + 1, day=min(start.day, calendar.monthrange(year, month + 1)[1])
    )


def _range(literal: Literal, today: dt.date) -> tuple[dt.date, dt.date]:
    """A date literal as [first day, day after the last day)."""
    text = literal.value.replace("FISCAL_", "")
    name, _, number = text.partition(":")
    count = int(number) if number else 0
    fixed = {"TODAY": 0, "YESTERDAY": -1, "TOMORROW": 1}
    if name in fixed:
        day = today + dt.timedelta(days=fixed[name])
        return day, day + dt.timedelta(days=1)
    if name == "LAST_90_DAYS":
        name, count = "LAST_N_DAYS", 90
    if name == "NEXT_90_DAYS":
        name, count = "NEXT_N_DAYS", 90
    unit = next(u for u in _UNITS if name.endswith(u) or f"_{u}S" in name or f"_{u}" in name)
    start = _unit_start(today, unit)
    if name.startswith("THIS_"):
        return start, _shift(start, unit, 1)
    if name.startswith("LAST_N_"):
        if unit == "DAY":
            # From midnight n days ago up to now, today included.
            return today - dt.timedelta(days=count), today + dt.timedelta(days=1)
        return _shift(start, unit, -count), start
    if name.startswith("NEXT_N_"):
        return _shift(start, unit, 1), _shift(start, unit, count + 1)
    if name.startswith("N_"):
        return _shift(start, unit, -count), _shift(start, unit, -count + 1)
    if name.startswith("LAST_"):
        return _shift(start, unit, -1), start
    return _shift(start, unit, 1), _shift(start, unit, 2)


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
    return _like_regex(pattern).fullmatch(value) is not None


@functools.lru_cache(maxsize=256)
def _like_regex(pattern: str) -> re.Pattern[str]:
    """A LIKE pattern as a regular expression, built once per pattern (a scan tests it on
    every row)."""
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
    return re.compile(regex, re.IGNORECASE | re.DOTALL)


def plan(text: str, schema: Schema) -> PlannedQuery:
    return PlannedQuery(parse(text), schema, text)
