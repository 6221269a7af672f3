"""The segment filter language: JSON validated by pydantic, compiled to a SQLAlchemy condition on `subscribers`.

A filter is one condition, an object with exactly one key naming its kind:

    {"all": [C, ...]}  {"any": [C, ...]}  {"not": C}
    {"attribute": {"name": "city", "op": "eq", "value": "Almaty"}}          eq ne contains in lt le gt ge
                                                                           between exists not_exists
    {"subscription": {"list": "weekly", "status": "confirmed", "source": "import",
                      "after": "2026-01-01", "before": "2026-06-01"}}      all given parts on one subscription
    {"opened": {"last": 3}}  {"clicked": {"last": 3}}  {"not_opened": {"last": 3}}   of the last N campaigns
    {"clicked_link": {"url": "https://example.org/a"}}
    {"bounced": {"kind": "hard" | "soft" | "any", "within_days": 30}}
    {"received": {"campaign": 12, "opened": false}}                         a `sent` ledger row in campaign 12

Nothing a user writes becomes SQL text: names and values are bound parameters, JSON paths are built from
names that match ATTRIBUTE_NAME. Errors name the bad part by its JSON path: `filter.all[2].attribute: ...`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    Tag,
    ValidationError,
    model_validator,
)
from sqlalchemy import (
    ColumnElement,
    Numeric,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from newsletter.db import MAX_ID, UNICODE_LOWER, is_postgres, utcnow
from newsletter.errors import Invalid
from newsletter.models import (
    Campaign,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionSource,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    digest_campaigns,
)

MAX_DEPTH = 6  # levels of all / any / not around a condition
MAX_CONDITIONS = 50  # conditions of every kind, combinators included
MAX_FILTER_CHARS = 20_000
ATTRIBUTE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
DATE_SHAPE = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"  # SQLite GLOB; the same shape as a regex below
DATE_REGEX = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


class InvalidFilter(Invalid):
    """A filter that cannot be used; the message starts with the JSON path of the bad part."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.detail = {"path": path, "problem": message}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Name = Annotated[str, StringConstraints(pattern=ATTRIBUTE_NAME)]
# No NUL (PostgreSQL text cannot hold one), and integers a database can bind (SQLite's are 64-bit): beyond,
# a filter is refused naming the value instead of failing in the driver.
Text = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00]*$")]
Integer = Annotated[StrictInt, Field(ge=-MAX_ID - 1, le=MAX_ID)]
Scalar = StrictBool | Integer | StrictFloat | Text
Number = Integer | StrictFloat
Comparable = Number | dt.date


class AttrEquals(_Strict):
    name: Name
    op: Literal["eq", "ne"]
    value: Scalar


class AttrContains(_Strict):
    """A text attribute holding `value`, in any letter case (Алматы holds "алм" and "АЛМ" alike)."""

    name: Name
    op: Literal["contains"]
    value: Text


class AttrIn(_Strict):
    name: Name
    op: Literal["in"]
    value: Annotated[list[Scalar], Field(min_length=1, max_length=100)]


class AttrCompare(_Strict):
    """A number attribute against a number, or a date attribute (text starting YYYY-MM-DD) against a date."""

    name: Name
    op: Literal["lt", "le", "gt", "ge"]
    value: Comparable


class AttrBetween(_Strict):
    name: Name
    op: Literal["between"]
    value: tuple[Number, Number] | tuple[dt.date, dt.date]

    @model_validator(mode="after")
    def _ordered(self) -> AttrBetween:
        if self.value[0] > self.value[1]:  # type: ignore[operator]
            raise ValueError("the first value of between is above the second: put the lowest first")
        return self


class AttrExists(_Strict):
    """The attribute is set to something other than null."""

    name: Name
    op: Literal["exists", "not_exists"]


AttributeSpec = Annotated[
    AttrEquals | AttrContains | AttrIn | AttrCompare | AttrBetween | AttrExists, Field(discriminator="op")
]


class SubscriptionSpec(_Strict):
    list: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    status: SubscriptionStatus | None = None
    source: SubscriptionSource | None = None
    after: dt.date | None = None  # joined the list on or after this day (UTC)
    before: dt.date | None = None  # joined before this day


class LastN(_Strict):
    last: Annotated[int, Field(ge=1, le=100)]


class LinkSpec(_Strict):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class BounceSpec(_Strict):
    kind: Literal["hard", "soft", "any"] = "any"
    within_days: Annotated[int, Field(ge=1, le=3650)] = 30


class ReceivedSpec(_Strict):
    campaign: Annotated[int, Field(ge=1, le=MAX_ID)]
    opened: bool | None = None
    clicked: bool | None = None


class All(_Strict):
    all: Annotated[list[Condition], Field(min_length=1)]


class Any_(_Strict):
    any: Annotated[list[Condition], Field(min_length=1)]


class Not(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)
    not_: Condition = Field(alias="not")


class AttributeCond(_Strict):
    attribute: AttributeSpec


class SubscriptionCond(_Strict):
    subscription: SubscriptionSpec


class OpenedCond(_Strict):
    opened: LastN


class ClickedCond(_Strict):
    clicked: LastN


class NotOpenedCond(_Strict):
    not_opened: LastN


class ClickedLinkCond(_Strict):
    clicked_link: LinkSpec


class BouncedCond(_Strict):
    bounced: BounceSpec


class ReceivedCond(_Strict):
    received: ReceivedSpec


KINDS: dict[str, type[_Strict]] = {
    "all": All,
    "any": Any_,
    "not": Not,
    "attribute": AttributeCond,
    "subscription": SubscriptionCond,
    "opened": OpenedCond,
    "clicked": ClickedCond,
    "not_opened": NotOpenedCond,
    "clicked_link": ClickedLinkCond,
    "bounced": BouncedCond,
    "received": ReceivedCond,
}


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next(iter(value)) if len(value) == 1 else None
    for name, cls in KINDS.items():
        if isinstance(value, cls):
            return name
    return None


Condition = Annotated[
    Annotated[All, Tag("all")]
    | Annotated[Any_, Tag("any")]
    | Annotated[Not, Tag("not")]
    | Annotated[AttributeCond, Tag("attribute")]
    | Annotated[SubscriptionCond, Tag("subscription")]
    | Annotated[OpenedCond, Tag("opened")]
    | Annotated[ClickedCond, Tag("clicked")]
    | Annotated[NotOpenedCond, Tag("not_opened")]
    | Annotated[ClickedLinkCond, Tag("clicked_link")]
    | Annotated[BouncedCond, Tag("bounced")]
    | Annotated[ReceivedCond, Tag("received")],
    Discriminator(_kind),
]


class Filter(BaseModel):
    condition: Condition


All.model_rebuild()
Any_.model_rebuild()
Not.model_rebuild()
Filter.model_rebuild()


# --- validation -------------------------------------------------------------------------------------------


def _path(parts: Sequence[str | int]) -> str:
    return "filter" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _check_shape(data: Any) -> None:
    """Depth and size limits, checked on the raw JSON before pydantic recurses into it."""
    count = 0
    stack: list[tuple[Any, list[str | int], int]] = [(data, [], 0)]
    while stack:
        node, where, depth = stack.pop()
        if not isinstance(node, dict) or len(node) != 1:
            continue  # pydantic names the problem
        count += 1
        if count > MAX_CONDITIONS:
            raise InvalidFilter("filter", f"more than {MAX_CONDITIONS} conditions: split it or simplify it")
        ((key, inner),) = node.items()
        if key in ("all", "any", "not") and depth + 1 > MAX_DEPTH:
            raise InvalidFilter(_path(where), f"nested deeper than {MAX_DEPTH} levels of all / any / not")
        if key in ("all", "any") and isinstance(inner, list):
            stack.extend((child, [*where, key, i], depth + 1) for i, child in enumerate(inner))
        elif key == "not":
            stack.append((inner, [*where, key], depth + 1))


def _located(data: Any, loc: Sequence[str | int]) -> list[str | int]:
    """The part of a pydantic error location that is in the input (pydantic adds union tags to it)."""
    parts: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part in node:  # noqa: SIM114 - typed apart
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            continue
        parts.append(part)
    return parts


_VALUES = {
    "eq": "text, a number or true/false (a missing attribute: use exists / not_exists)",
    "ne": "text, a number or true/false (a missing attribute: use exists / not_exists)",
    "contains": "non-empty text",
    "in": "a list of 1 to 100 values, each text, a number or true/false",
    "between": "two numbers or two dates (YYYY-MM-DD), lowest first",
}


def _value_message(data: Any, parts: list[str | int]) -> str | None:
    """What an attribute condition's `value` must be, said for its operator."""
    if "value" not in parts:
        return None
    node = data
    for part in parts[: parts.index("value")]:
        node = node[part]
    op = node.get("op") if isinstance(node, dict) else None
    if op in ("lt", "le", "gt", "ge"):
        return "must be a number, or a date as YYYY-MM-DD"
    return f"must be {_VALUES[op]}" if op in _VALUES else None


def _message(error: Any, data: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind not in ("extra_forbidden", "missing") and (said := _value_message(data, _located(data, error["loc"][1:]))):
        return said
    tag = str(ctx.get("tag", ""))
    if kind == "union_tag_invalid" and ctx.get("discriminator") == "'op'":
        return f'unknown operator "{tag}" (use {", ".join(_OPS)})'
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"a condition is an object with one key, one of {', '.join(KINDS)}"
    if kind == "extra_forbidden":
        return f'unknown field "{error["loc"][-1]}"'
    if kind == "missing":
        return f'"{error["loc"][-1]}" is required'
    if kind == "string_pattern_mismatch":
        return "an attribute name is 1-64 letters, digits, _ or -"
    return str(error["msg"]).removeprefix("Value error, ")


_OPS = ("eq", "ne", "contains", "in", "lt", "le", "gt", "ge", "between", "exists", "not_exists")


def parse(data: Any) -> Filter:
    """Validate a filter given as parsed JSON; InvalidFilter names the first bad part."""
    if isinstance(data, str):
        if len(data) > MAX_FILTER_CHARS:
            raise InvalidFilter("filter", f"longer than {MAX_FILTER_CHARS:,} characters")
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise InvalidFilter("filter", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    _check_shape(data)
    try:
        return Filter.model_validate({"condition": data})
    except ValidationError as exc:
        errors = exc.errors()
        # the deepest problem is the one to fix (a union reports its own failure above its member's)
        first = max(errors, key=lambda e: len(_located(data, e["loc"][1:])))
        raise InvalidFilter(_path(_located(data, first["loc"][1:])), _message(first, data)) from None


def dump(filt: Filter) -> Any:
    """The filter as JSON data, as stored."""
    return filt.model_dump(mode="json", by_alias=True, exclude_none=True)["condition"]


# --- compiling --------------------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, session: Session, now: dt.datetime) -> None:
        self.session = session
        self.postgres = is_postgres(session)
        self.now = now
        self._last: dict[int, list[int]] = {}

    def condition(self, node: Any, where: list[str | int]) -> ColumnElement[bool]:
        if isinstance(node, All):
            return and_(true(), *(self.condition(c, [*where, "all", i]) for i, c in enumerate(node.all)))
        if isinstance(node, Any_):
            return or_(false(), *(self.condition(c, [*where, "any", i]) for i, c in enumerate(node.any)))
        if isinstance(node, Not):
            return not_(self.condition(node.not_, [*where, "not"]))
        if isinstance(node, AttributeCond):
            return self.attribute(node.attribute)

        if isinstance(node, SubscriptionCond):
            return self.subscription(node.subscription, [*where, "subscription"])
        if isinstance(node, OpenedCond | ClickedCond):
            kind = EventType.open if isinstance(node, OpenedCond) else EventType.click
            last = node.opened.last if isinstance(node, OpenedCond) else node.clicked.last
            return self.engaged(kind, last)
        if isinstance(node, NotOpenedCond):
            received = exists().where(
                Delivery.subscriber_id == Subscriber.id,
                Delivery.campaign_id.in_(self.last_campaigns(node.not_opened.last)),
                Delivery.status == DeliveryStatus.sent,
            )
            return and_(received, ~self.engaged(EventType.open, node.not_opened.last))
        if isinstance(node, ClickedLinkCond):
            return exists().where(
                Event.subscriber_id == Subscriber.id, Event.type == EventType.click, Event.url == node.clicked_link.url
            )
        if isinstance(node, BouncedCond):
            return self.bounced(node.bounced)
        assert isinstance(node, ReceivedCond)
        return self.received(node.received)

    # attributes: PostgreSQL reads the JSONB with operators a GIN index serves (@>, ?), SQLite with json_*()

    def _typeof(self, name: str) -> ColumnElement[Any]:
        if self.postgres:
            return func.jsonb_typeof(Subscriber.attributes.op("->")(literal(name)))
        return func.json_type(Subscriber.attributes, literal(_sqlite_path(name)))

    def _text(self, name: str) -> ColumnElement[Any]:
        if self.postgres:
            return Subscriber.attributes.op("->>")(literal(name))
        return func.json_extract(Subscriber.attributes, literal(_sqlite_path(name)))

    def _is_text(self, name: str) -> ColumnElement[bool]:
        return self._typeof(name) == ("string" if self.postgres else "text")

    def _is_number(self, name: str) -> ColumnElement[bool]:
        if self.postgres:
            return self._typeof(name) == "number"
        return self._typeof(name).in_(["integer", "real"])

    def equals(self, name: str, value: Any) -> ColumnElement[bool]:
        if self.postgres:
            return Subscriber.attributes.op("@>", is_comparison=True)(type_coerce({name: value}, JSONB))
        if isinstance(value, bool):
            return _two_valued(self._typeof(name) == ("true" if value else "false"))
        if isinstance(value, str):
            return _two_valued(and_(self._is_text(name), self._text(name) == value))
        return _two_valued(and_(self._is_number(name), self._text(name) == value))

    def attribute(self, spec: Any) -> ColumnElement[bool]:
        name = spec.name
        if isinstance(spec, AttrEquals):
            equal = self.equals(name, spec.value)
            return equal if spec.op == "eq" else ~equal
        if isinstance(spec, AttrIn):
            # keyed by type too: in Python 1 == 1.0 == True, and in JSON true is not 1
            distinct = {(type(value), value): value for value in spec.value}.values()
            return or_(*(self.equals(name, value) for value in distinct))
        if isinstance(spec, AttrContains):
            return self._contains_text(name, spec.value)
        if isinstance(spec, AttrExists):
            present = _two_valued(self._typeof(name).is_not(None) & (self._typeof(name) != "null"))
            return present if spec.op == "exists" else ~present
        if isinstance(spec, AttrCompare):
            return self.compare(name, spec.op, spec.value)
        assert isinstance(spec, AttrBetween)
        low, high = spec.value
        return and_(self.compare(name, "ge", low), self.compare(name, "le", high))

    def _contains_text(self, name: str, value: str) -> ColumnElement[bool]:
        """Case-insensitive for every alphabet: both sides lowered by the database, with the same function."""
        position = func.strpos if self.postgres else func.instr
        lower = func.lower if self.postgres else getattr(func, UNICODE_LOWER)
        found = position(lower(self._text(name)), lower(literal(value))) > 0
        return _two_valued(and_(self._is_text(name), found))

    def compare(self, name: str, op: str, value: Any) -> ColumnElement[bool]:
        if isinstance(value, dt.date):
            day = func.substr(self._text(name), 1, 10)
            bound: Any = value.isoformat()
            if self.postgres:
                # a scan reads every row: compare first (cheap), check the shape (a regex) only on a match; the
                # shape check alone refuses non-strings too (->> of a number or true never looks like a date)
                compared = {"lt": day < bound, "le": day <= bound, "gt": day > bound, "ge": day >= bound}[op]
                return case((compared, day.op("~")(DATE_REGEX)), else_=false())
            subject: ColumnElement[Any] = case((and_(self._is_text(name), day.op("GLOB")(DATE_SHAPE)), day))
        else:
            if self.postgres:
                number = cast(Subscriber.attributes.op("->>")(literal(name)), Numeric())
                subject = case((self._is_number(name), number))
            else:
                subject = case((self._is_number(name), self._text(name)))
            bound = value
        return _two_valued(
            {"lt": subject < bound, "le": subject <= bound, "gt": subject > bound, "ge": subject >= bound}[op]
        )

    # subscriptions and engagement

    def subscription(self, spec: SubscriptionSpec, where: list[str | int]) -> ColumnElement[bool]:
        conditions: list[ColumnElement[bool]] = [Subscription.subscriber_id == Subscriber.id]
        if spec.list is not None:
            list_id = self.session.scalar(select(MailingList.id).where(MailingList.slug == spec.list))
            if list_id is None:
                raise InvalidFilter(_path([*where, "list"]), f'there is no list "{spec.list}"')
            conditions.append(Subscription.list_id == list_id)
        if spec.status is not None:
            conditions.append(Subscription.status == spec.status)
        if spec.source is not None:
            conditions.append(Subscription.source == spec.source)
        if spec.after is not None:
            conditions.append(Subscription.created_at >= _midnight(spec.after))
        if spec.before is not None:
            conditions.append(Subscription.created_at < _midnight(spec.before))
        return exists().where(*conditions)

    def last_campaigns(self, n: int) -> list[int]:
        """The ids of the last `n` campaigns that started sending, read now (when the filter is compiled: a
        campaign's plan or a count). As values rather than a subquery, they let PostgreSQL plan one hash
        join over those campaigns' rows instead of a probe per subscriber (1.5 s -> see bench/segments.py)."""
        if n not in self._last:
            query = (
                select(Campaign.id)
                # digests' campaigns: a sequence step's long-lived campaign is not "a campaign" readers get
                .where(Campaign.started_at.is_not(None), digest_campaigns())
                .order_by(Campaign.started_at.desc(), Campaign.id.desc())
                .limit(n)
            )
            self._last[n] = list(self.session.scalars(query))
        return self._last[n]

    def engaged(self, kind: EventType, last: int) -> ColumnElement[bool]:
        return exists().where(
            Event.subscriber_id == Subscriber.id, Event.type == kind, Event.campaign_id.in_(self.last_campaigns(last))
        )

    def bounced(self, spec: BounceSpec) -> ColumnElement[bool]:
        since = self.now - dt.timedelta(days=spec.within_days)
        bounce = exists().where(
            Event.subscriber_id == Subscriber.id, Event.type == EventType.bounce, Event.created_at >= since
        )
        # a hard bounce always suppresses the address (ledger, bounces.py): that is what tells the two apart
        hard = exists().where(
            Suppression.email_hash == Subscriber.email_hash, Suppression.reason == SuppressionReason.hard_bounce
        )
        return {"any": bounce, "hard": and_(bounce, hard), "soft": and_(bounce, ~hard)}[spec.kind]

    def received(self, spec: ReceivedSpec) -> ColumnElement[bool]:
        conditions: list[ColumnElement[bool]] = [
            Delivery.subscriber_id == Subscriber.id,
            Delivery.campaign_id == spec.campaign,
            Delivery.status == DeliveryStatus.sent,
        ]
        for wanted, kind in ((spec.opened, EventType.open), (spec.clicked, EventType.click)):
            if wanted is not None:
                event = exists().where(Event.delivery_id == Delivery.id, Event.type == kind)
                conditions.append(event if wanted else ~event)
        return exists().where(*conditions)


def _two_valued(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """False where SQL would say NULL (a missing attribute): else `not` of it would match nobody either.
    Not needed around PostgreSQL's `attributes @> ...`, which is never NULL and which a coalesce would hide
    from the GIN index."""
    return func.coalesce(condition, false())


def _sqlite_path(name: str) -> str:
    return f'$."{name}"'  # ATTRIBUTE_NAME admits no quote, so the name cannot leave the string


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def compile_filter(session: Session, filt: Filter, *, now: dt.datetime | None = None) -> ColumnElement[bool]:
    """The filter as a condition on `Subscriber` rows (use it in a query that selects from `subscribers`)."""
    return _Compiler(session, now or utcnow()).condition(filt.condition, [])
