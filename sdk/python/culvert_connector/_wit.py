"""Conversions between the SDK's records and the generated WIT bindings, and the error
guard every export goes through. Only meaningful inside a component."""

import sys
import traceback
import types as _pytypes

from .errors import KINDS, ConnectorError
from .types import Batch, TableRef, TableRows

try:
    from wit_world.imports import types as t
    from componentize_py_types import Err
except ImportError:  # Natively there are no bindings; exports are not installed.
    t = None
    Err = None

#: Whether the generated bindings are present (inside a component build).
BOUND = t is not None


def _where(exc):
    # The innermost frames say where the bug is; no source lines exist in a component.
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return " <- ".join("%s:%d in %s" % (f.filename.rsplit("/", 1)[-1], f.lineno, f.name)
                       for f in reversed(frames))


def unexpected(exc, call):
    """A ConnectorError for an exception the connector did not expect."""
    message = "unexpected %s in `%s`: %s (at %s); this is a bug in the connector" % (
        type(exc).__name__, call, exc, _where(exc))
    return ConnectorError("internal", message)


def to_err(e):
    """The WIT error for a ConnectorError."""
    kind = e.kind if e.kind in KINDS else "internal"
    return Err(t.ConnectorError(kind=t.ErrorKind[kind.upper()], message=str(e.message)))


def guard(call, fn, *args):
    """Run `fn(*args)`, turning every exception into a WIT `Err(connector-error)`."""
    try:
        return fn(*args)
    except Err:
        raise
    except ConnectorError as e:
        raise to_err(e) from None
    except Exception as e:  # noqa: BLE001 - a trap would hide the message from the operator
        raise to_err(unexpected(e, call)) from None


def table_ref(r):
    """SDK TableRef -> WIT."""
    return t.TableRef(namespace=r.namespace, name=r.name)


def table_ref_in(r):
    """WIT TableRef -> SDK."""
    return TableRef(r.namespace, r.name)


def check_result(c):
    """SDK Check -> WIT."""
    return t.CheckResult(name=str(c.name), ok=bool(c.ok), message=str(c.message or ""))


def table_info(i):
    """SDK TableInfo -> WIT."""
    return t.TableInfo(
        table=table_ref(i.table),
        columns=[
            t.ColumnInfo(name=c.name, type_name=c.type_name, nullable=bool(c.nullable),
                         key_ordinal=c.key_ordinal, unsupported_reason=c.unsupported_reason or "")
            for c in i.columns
        ],
        identifiable=bool(i.identifiable),
        estimated_rows=int(i.estimated_rows),
    )


def batch(b):
    """SDK Batch -> WIT."""
    return t.Batch(
        kind=t.BatchKind[b.kind.upper()],
        position=bytes(b.position),
        tables=[t.TableRows(table=table_ref(r.table), first_of_table=bool(r.first_of_table),
                            row_count=int(r.row_count), ipc=bytes(r.ipc)) for r in b.tables],
        lag_bytes=int(b.lag_bytes),
        continues=bool(b.continues),
    )


def batch_in(b):
    """WIT Batch -> SDK."""
    return Batch(
        b.kind.name.lower(),
        bytes(b.position),
        [TableRows(table_ref_in(r.table), r.first_of_table, r.row_count, bytes(r.ipc))
         for r in b.tables],
        b.lag_bytes,
        b.continues,
    )


def install_module(name, **attrs):
    """Register a module componentize-py imports to find resource classes (for example
    `source_connector` with `Reader`), so connector authors need not write it."""
    module = _pytypes.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module
