"""The filters of the read side, as clauses added to a SELECT: the window every list shares
(``target``, ``since``/``until``, ``after_id``/``before_id``, ``limit``, order) and the
filters of the history and of the alerts.

Statement builders only: nothing here runs a query or opens a connection.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select

from auditor.store.schema import alert_events, alerts, changes, targets


def window(
    stmt: Select[Any],
    id_column: ColumnElement[int],
    time_column: ColumnElement[datetime],
    *,
    target: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    after_id: int | None,
    before_id: int | None,
    newest_first: bool,
) -> Select[Any]:
    stmt = where(stmt, time_column, target=target, since=since, until=until)
    if after_id is not None:
        stmt = stmt.where(id_column > after_id)
    if before_id is not None:
        stmt = stmt.where(id_column < before_id)
    stmt = stmt.order_by(id_column.desc() if newest_first else id_column.asc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt


def where(
    stmt: Select[Any],
    time_column: ColumnElement[datetime],
    *,
    target: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[Any]:
    if target is not None:
        stmt = stmt.where(targets.c.name == target)
    if since is not None:
        stmt = stmt.where(time_column >= since)
    if until is not None:
        stmt = stmt.where(time_column < until)
    return stmt


def change_filters(
    stmt: Select[Any],
    *,
    key: str | None,
    kinds: Collection[str] | None,
    collections: Collection[str] | None,
) -> Select[Any]:
    if key is not None:
        stmt = stmt.where(changes.c.key == key)
    if kinds is not None:
        stmt = stmt.where(changes.c.kind.in_(list(kinds)))
    if collections is not None:
        stmt = stmt.where(changes.c.collection.in_(list(collections)))
    return stmt


def alert_filters(
    stmt: Select[Any],
    *,
    kinds: Collection[str] | None,
    severities: Collection[str] | None,
    firing: bool,
) -> Select[Any]:
    if kinds is not None:
        stmt = stmt.where(alert_events.c.kind.in_(list(kinds)))
    if severities is not None:
        # A resolution is recorded as info; the alerts row of its fingerprint keeps the
        # severity of the condition it ended.
        of_condition = select(alerts.c.fingerprint).where(alerts.c.severity.in_(list(severities)))
        stmt = stmt.where(
            or_(
                alert_events.c.severity.in_(list(severities)),
                and_(
                    alert_events.c.status == "resolved",
                    alert_events.c.fingerprint.in_(of_condition),
                ),
            )
        )
    if firing:
        # The newest event of each condition firing now (an alerts row per fingerprint).
        newest = (
            select(func.max(alert_events.c.id))
            .join(alerts, alerts.c.fingerprint == alert_events.c.fingerprint)
            .where(alerts.c.status == "firing")
            .group_by(alert_events.c.fingerprint)
        )
        stmt = stmt.where(alert_events.c.id.in_(newest))
    return stmt
