"""Plain records a connector returns and receives; the SDK converts them to and from
the WIT records, so connector code (and its native unit tests) never touches bindings."""

from .errors import ConnectorError

__all__ = [
    "Check",
    "TableRef",
    "ColumnInfo",
    "TableInfo",
    "TableRows",
    "Batch",
    "SNAPSHOT",
    "CHANGES",
    "HEARTBEAT",
]

SNAPSHOT = "snapshot"
CHANGES = "changes"
HEARTBEAT = "heartbeat"
_KINDS = (SNAPSHOT, CHANGES, HEARTBEAT)


class Check:
    """One line of a `check` report: a short name, whether it passed, what to do if not."""

    __slots__ = ("name", "ok", "message")

    def __init__(self, name, ok, message=""):
        self.name = name
        self.ok = bool(ok)
        self.message = message

    @classmethod
    def passed(cls, name):
        """A passing check."""
        return cls(name, True, "")

    @classmethod
    def failed(cls, name, message):
        """A failing check; `message` says what to do about it."""
        return cls(name, False, message)

    @classmethod
    def run(cls, name, fn, *args):
        """Run `fn(*args)`: pass if it returns, fail with the error's message if it raises."""
        try:
            fn(*args)
        except ConnectorError as e:
            return cls(name, False, e.message)
        return cls(name, True, "")

    def __eq__(self, other):
        return isinstance(other, Check) and (self.name, self.ok, self.message) == (
            other.name, other.ok, other.message)

    def __repr__(self):
        return "Check(%r, %r, %r)" % (self.name, self.ok, self.message)


def _wildcard(pattern, text):
    # `*` any run, `?` one character; backtrack to the last `*` on a mismatch.
    p = t = 0
    star = -1
    mark = 0
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            p += 1
            t += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


class TableRef:
    """A table's namespace and name, exactly as spelled at the source."""

    __slots__ = ("namespace", "name")

    def __init__(self, namespace, name):
        self.namespace = namespace
        self.name = name

    def matches(self, glob):
        """Whether a glob such as `public.*` or `sales.order_?` matches; a glob without
        `.` matches the table name in any namespace."""
        if "." in glob:
            ns, name = glob.split(".", 1)
            return _wildcard(ns, self.namespace) and _wildcard(name, self.name)
        return _wildcard(glob, self.name)

    def is_selected(self, selection):
        """Whether a reader's selection includes this table; empty selects everything."""
        return not selection or any(self.matches(g) for g in selection)

    def __eq__(self, other):
        return isinstance(other, TableRef) and (self.namespace, self.name) == (
            other.namespace, other.name)

    def __hash__(self):
        return hash((self.namespace, self.name))

    def __str__(self):
        return "%s.%s" % (self.namespace, self.name)

    def __repr__(self):
        return "TableRef(%r, %r)" % (self.namespace, self.name)


class ColumnInfo:
    """A column as `discover` reports it."""

    __slots__ = ("name", "type_name", "nullable", "key_ordinal", "unsupported_reason")

    def __init__(self, name, type_name, nullable=True, key_ordinal=None, unsupported_reason=""):
        self.name = name
        self.type_name = type_name
        self.nullable = nullable
        self.key_ordinal = key_ordinal
        self.unsupported_reason = unsupported_reason

    def __repr__(self):
        return "ColumnInfo(%r, %r, nullable=%r, key_ordinal=%r)" % (
            self.name, self.type_name, self.nullable, self.key_ordinal)


class TableInfo:
    """A table as `discover` reports it."""

    __slots__ = ("table", "columns", "identifiable", "estimated_rows")

    def __init__(self, table, columns, identifiable=None, estimated_rows=0):
        self.table = table
        self.columns = list(columns)
        if identifiable is None:
            identifiable = any(c.key_ordinal is not None for c in self.columns)
        self.identifiable = identifiable
        self.estimated_rows = estimated_rows

    def __repr__(self):
        return "TableInfo(%s, %d columns)" % (self.table, len(self.columns))


class TableRows:
    """Rows of one table as an Arrow IPC stream; usually made by `rows.RowsBuilder.finish`."""

    __slots__ = ("table", "first_of_table", "row_count", "ipc")

    def __init__(self, table, first_of_table, row_count, ipc):
        self.table = table
        self.first_of_table = first_of_table
        self.row_count = row_count
        self.ipc = ipc

    def __repr__(self):
        return "TableRows(%s, first_of_table=%r, rows=%d, %d bytes)" % (
            self.table, self.first_of_table, self.row_count, len(self.ipc))


class Batch:
    """What a source produces and a destination applies atomically."""

    __slots__ = ("kind", "position", "tables", "lag_bytes", "continues")

    def __init__(self, kind, position, tables=(), lag_bytes=0, continues=False):
        if kind not in _KINDS:
            raise ValueError("batch kind must be one of %s, not %r" % (", ".join(_KINDS), kind))
        self.kind = kind
        self.position = bytes(position)
        self.tables = list(tables)
        self.lag_bytes = lag_bytes
        self.continues = continues

    @classmethod
    def snapshot(cls, position, tables):
        """Rows of the initial copy."""
        return cls(SNAPSHOT, position, tables)

    @classmethod
    def changes(cls, position, tables, lag_bytes=0, continues=False):
        """Changes in commit order (tables built with `changes=True`)."""
        return cls(CHANGES, position, tables, lag_bytes, continues)

    @classmethod
    def heartbeat(cls, position, lag_bytes=0):
        """No rows: only the position moves."""
        return cls(HEARTBEAT, position, (), lag_bytes)

    @property
    def row_count(self):
        """Rows in all tables."""
        return sum(t.row_count for t in self.tables)

    def __repr__(self):
        return "Batch(%s, position=%s, %d table(s), %d rows)" % (
            self.kind, self.position.hex(), len(self.tables), self.row_count)
