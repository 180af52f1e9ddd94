"""Records and their databases: primary keys as JSON, locked reads, and the
transaction each worker attempt runs in."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import uuid
from typing import Any

import peewee as pw


def primary_key_fields(model: type[pw.Model]) -> tuple[pw.Field, ...]:
    """The fields of the model's primary key, in order (several when composite)."""
    meta = model._meta
    primary_key: Any = meta.primary_key
    if isinstance(primary_key, pw.CompositeKey):
        return tuple(meta.fields[name] for name in primary_key.field_names)
    return (primary_key,)


def json_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (uuid.UUID, decimal.Decimal, datetime.date, datetime.time)):
        # str() of a datetime is the form peewee stores and parses back.
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(
        f"Cannot carry a primary key value of type {type(value).__name__} in a message."
    )


def encode_primary_key(model: type[pw.Model], record: pw.Model) -> Any:
    """The record's primary key as a JSON value: a scalar, or a list when composite."""
    fields = primary_key_fields(model)
    values = [json_value(record.__data__.get(field.name)) for field in fields]
    if len(fields) == 1:
        if values[0] is None:
            raise ValueError(
                f"The {model.__name__} record has no primary key yet; save it before "
                "running a trigger on it."
            )
        return values[0]
    return values


def decode_primary_key(model: type[pw.Model], value: Any) -> tuple[Any, ...]:
    """The primary key values, one per primary key field, from a JSON value."""
    fields = primary_key_fields(model)
    values = list(value) if len(fields) > 1 else [value]
    if len(values) != len(fields):
        raise ValueError(f"{value!r} is not a primary key of {model.__name__}.")
    decoded: list[Any] = []
    for field, raw in zip(fields, values):
        if isinstance(field, pw.BinaryUUIDField) and isinstance(raw, str):
            # Carried as the UUID's text; the field turns a UUID into bytes.
            decoded.append(uuid.UUID(raw))
        elif isinstance(field, pw.BlobField) and isinstance(raw, str):
            decoded.append(bytes.fromhex(raw))
        else:
            decoded.append(field.python_value(raw))
    return tuple(decoded)


def primary_key_condition(model: type[pw.Model], values: tuple[Any, ...]) -> pw.Expression:
    """``pk == value`` (an AND of them for a composite key)."""
    condition = None
    for field, value in zip(primary_key_fields(model), values):
        term = field == value
        condition = term if condition is None else condition & term
    assert condition is not None
    return condition


def mark_item(primary_key: Any, arguments: dict[str, Any] | None) -> str:
    """The in-flight mark of a record and its action arguments."""
    if type(primary_key) is int:
        item = str(primary_key)  # What json.dumps gives, at a fraction of the cost.
    else:
        item = json.dumps(primary_key, separators=(",", ":"))
    if arguments:
        encoded = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
        item += ":" + hashlib.sha1(encoded.encode()).hexdigest()[:16]
    return item


def done_item(primary_key: Any) -> str:
    """The done mark of a record, for ``trigger_once``."""
    return json.dumps(primary_key, separators=(",", ":"))


def real_database(model: type[pw.Model]) -> pw.Database:
    """The model's database, looking through a ``DatabaseProxy``."""
    database = model._meta.database
    while isinstance(database, pw.DatabaseProxy):
        database = database.obj
        if database is None:
            raise RuntimeError(
                f"The database proxy of {model.__name__} is not initialized yet."
            )
    return database


def is_sqlite(database: pw.Database) -> bool:
    return isinstance(database, pw.SqliteDatabase)


def transaction(database: pw.Database, *, lock: bool) -> Any:
    """A transaction (a savepoint when one is open) for one worker step.

    SQLite has no row locks: with ``lock`` it takes its write lock when the
    transaction begins (``BEGIN IMMEDIATE``), so two workers cannot both
    read the row before either has written it.
    """
    if lock and is_sqlite(database) and not database.in_transaction():
        return database.atomic(lock_type="IMMEDIATE")
    return database.atomic()


def read_locked(
    model: type[pw.Model],
    primary_key: tuple[Any, ...],
    where: pw.Expression | None,
    *,
    lock: bool,
) -> pw.Model | None:
    """Read the record by primary key and ``where``, locked when asked to."""
    query = model.select().where(primary_key_condition(model, primary_key))
    if where is not None:
        query = query.where(where)
    database = real_database(model)
    if lock and getattr(database, "for_update", False):
        query = query.for_update()
    return query.get_or_none()
