"""Tables and row builders that follow Culvert's Arrow conventions.

Every table column carries field metadata `culvert.type` (the source type name, used to
create the destination column) and, when it follows from the type, `culvert.kind`;
key columns carry `culvert.key`. The schema carries `culvert.primary_key` (JSON array of
column names), `culvert.namespace` and `culvert.table`. Changes lead with the columns
`__culvert_op`, `__culvert_lsn`, `__culvert_seq` and `__culvert_unchanged`.

    ITEMS = Table("demo", "items", [
        Column.bigint("id").primary_key(),
        Column.text("name"),
        Column.double("amount"),
    ])
    rows = ITEMS.rows(first_of_table=True)
    rows.append([1, "first", 1.25])
    batch = Batch.snapshot(position, [rows.finish()])
"""

import json

from . import arrow
from .arrow import ArrowError
from .errors import ConnectorError
from .types import ColumnInfo, TableInfo, TableRef, TableRows

__all__ = [
    "Column",
    "Table",
    "TableRowsBuilder",
    "OPS",
    "META_TYPE",
    "META_KIND",
    "META_KEY",
    "META_PRIMARY_KEY",
    "META_NAMESPACE",
    "META_TABLE",
    "COL_OP",
    "COL_LSN",
    "COL_SEQ",
    "COL_UNCHANGED",
]

META_TYPE = "culvert.type"
META_KIND = "culvert.kind"
META_KEY = "culvert.key"
META_PRIMARY_KEY = "culvert.primary_key"
META_NAMESPACE = "culvert.namespace"
META_TABLE = "culvert.table"
COL_OP = "__culvert_op"
COL_LSN = "__culvert_lsn"
COL_SEQ = "__culvert_seq"
COL_UNCHANGED = "__culvert_unchanged"

#: Change operations: insert, update after-image, before-image of the next update,
#: delete, truncate.
OPS = ("I", "U", "B", "D", "T")


class Column:
    """A table column: name, source type name, Arrow type, nullability, key membership."""

    __slots__ = ("name", "type_name", "type", "nullable", "is_key", "metadata")

    def __init__(self, name, type_name, type, nullable=True, metadata=None):
        self.name = name
        self.type_name = type_name
        self.type = type
        self.nullable = nullable
        self.is_key = False
        self.metadata = dict(metadata or {})

    @classmethod
    def bigint(cls, name):
        """`bigint` as int64."""
        return cls(name, "bigint", arrow.INT64)

    @classmethod
    def integer(cls, name):
        """`integer` as int32."""
        return cls(name, "integer", arrow.INT32)

    @classmethod
    def smallint(cls, name):
        """`smallint` as int16."""
        return cls(name, "smallint", arrow.INT16)

    @classmethod
    def double(cls, name):
        """`double precision` as float64."""
        return cls(name, "double precision", arrow.FLOAT64)

    @classmethod
    def real(cls, name):
        """`real` as float32."""
        return cls(name, "real", arrow.FLOAT32)

    @classmethod
    def boolean(cls, name):
        """`boolean` as bool."""
        return cls(name, "boolean", arrow.BOOL)

    @classmethod
    def text(cls, name):
        """`text` as utf8."""
        return cls(name, "text", arrow.UTF8)

    @classmethod
    def jsonb(cls, name):
        """`jsonb` as utf8 holding JSON text."""
        return cls(name, "jsonb", arrow.UTF8)

    @classmethod
    def numeric(cls, name):
        """`numeric` as utf8 holding the decimal text (exact, any precision)."""
        return cls(name, "numeric", arrow.UTF8)

    @classmethod
    def bytea(cls, name):
        """`bytea` as binary."""
        return cls(name, "bytea", arrow.BINARY)

    @classmethod
    def uuid(cls, name):
        """`uuid` as fixed-size binary of 16 bytes."""
        return cls(name, "uuid", arrow.fixed_size_binary(16))

    @classmethod
    def date(cls, name):
        """`date` as date32 (values: `datetime.date` or days since 1970-01-01)."""
        return cls(name, "date", arrow.DATE32)

    @classmethod
    def timestamptz(cls, name):
        """`timestamp with time zone` as timestamp(us, UTC) (values: aware or UTC
        `datetime`, or microseconds since the epoch)."""
        return cls(name, "timestamp with time zone", arrow.TIMESTAMP_US_UTC)

    @classmethod
    def timestamp(cls, name):
        """`timestamp without time zone` as timestamp(us)."""
        return cls(name, "timestamp without time zone", arrow.TIMESTAMP_US)

    def not_null(self):
        """Values are never null."""
        self.nullable = False
        return self

    def primary_key(self):
        """Part of the primary key (in declaration order); implies not null."""
        self.is_key = True
        self.nullable = False
        return self

    def with_metadata(self, key, value):
        """Extra field metadata, for example `culvert.enum`."""
        self.metadata[key] = value
        return self

    def kind(self):
        """The first-party kind name implied by the Arrow type and type name, if any."""
        base = self.type_name.lower()
        t = self.type
        simple = {
            arrow.BOOL: "bool", arrow.INT16: "int2", arrow.INT32: "int4", arrow.INT64: "int8",
            arrow.FLOAT32: "float4", arrow.FLOAT64: "float8", arrow.BINARY: "bytea",
            arrow.DATE32: "date", arrow.TIMESTAMP_US: "timestamp",
        }
        if t in simple:
            return simple[t]
        if t == arrow.UTF8:
            if base.startswith("numeric") or base.startswith("decimal"):
                return "numeric"
            if base in ("jsonb", "json"):
                return base
            return "text"
        if t == arrow.fixed_size_binary(16) and base == "uuid":
            return "uuid"
        if t.name.startswith("timestamp[us,"):
            return "timestamptz"
        return None

    def _field(self, key_ordinal, nullable):
        meta = {META_TYPE: self.type_name}
        kind = self.kind()
        if kind:
            meta[META_KIND] = kind
        if key_ordinal is not None:
            meta[META_KEY] = str(key_ordinal)
        meta.update(self.metadata)
        return arrow.Field(self.name, self.type, nullable, meta)

    def __repr__(self):
        return "Column(%r, %r, %r)" % (self.name, self.type_name, self.type)


class Table:
    """A table's name and columns, from which row builders and `discover` output are made."""

    def __init__(self, namespace, name, columns):
        self.ref = TableRef(namespace, name)
        self.columns = list(columns)
        if not self.columns:
            raise ConnectorError("internal", "table %s declares no columns" % self.ref)
        seen = set()
        for c in self.columns:
            if not isinstance(c, Column):
                raise ConnectorError("internal", "table %s: %r is not a Column" % (self.ref, c))
            if c.name.startswith("__culvert_"):
                raise ConnectorError(
                    "internal",
                    "table %s: column name `%s` is reserved (the `__culvert_` prefix marks "
                    "change columns); rename it" % (self.ref, c.name))
            if c.name in seen:
                raise ConnectorError("internal", "table %s: column `%s` is declared twice"
                                     % (self.ref, c.name))
            seen.add(c.name)
        self.index = {c.name: i for i, c in enumerate(self.columns)}
        keys = []
        ordinals = []
        for c in self.columns:
            if c.is_key:
                keys.append(c.name)
                ordinals.append(len(keys))
            else:
                ordinals.append(None)
        self.primary_key = keys
        self._ordinals = ordinals
        meta = {
            META_PRIMARY_KEY: json.dumps(keys),
            META_NAMESPACE: namespace,
            META_TABLE: name,
        }
        self.snapshot_schema = arrow.Schema(
            [c._field(k, c.nullable) for c, k in zip(self.columns, ordinals)], meta)
        # Deletes carry only the key and truncates nothing, so every table column may be null.
        self.changes_schema = arrow.Schema(
            [
                arrow.Field(COL_OP, arrow.UTF8, False),
                arrow.Field(COL_LSN, arrow.UINT64, False),
                arrow.Field(COL_SEQ, arrow.UINT64, False),
                arrow.Field(COL_UNCHANGED, arrow.BINARY, True),
            ]
            + [c._field(k, True) for c, k in zip(self.columns, ordinals)],
            meta,
        )

    @property
    def namespace(self):
        """The table's namespace."""
        return self.ref.namespace

    @property
    def name(self):
        """The table's name."""
        return self.ref.name

    def is_selected(self, selection):
        """Whether a reader's selection (globs such as `demo.*`) includes this table."""
        return self.ref.is_selected(selection)

    def info(self, estimated_rows=0):
        """The table as `discover` reports it."""
        cols = [ColumnInfo(c.name, c.type_name, c.nullable, k)
                for c, k in zip(self.columns, self._ordinals)]
        return TableInfo(self.ref, cols, bool(self.primary_key), estimated_rows)

    def rows(self, first_of_table=False):
        """A builder of snapshot rows."""
        return TableRowsBuilder(self, changes=False, first_of_table=first_of_table)

    def changes(self):
        """A builder of change rows."""
        return TableRowsBuilder(self, changes=True)

    def __repr__(self):
        return "Table(%s, %s)" % (self.ref, [c.name for c in self.columns])


class TableRowsBuilder:
    """Collects rows of one table and writes them as one Arrow IPC stream (`finish`).

    Rows are sequences in column order, or dicts by column name (missing names are null).
    """

    def __init__(self, table, changes=False, first_of_table=False):
        self.table = table
        self.is_changes = changes
        self.first_of_table = first_of_table
        self._cols = [[] for _ in table.columns]
        self._meta = [[], [], [], []] if changes else None
        self._n = 0

    def __len__(self):
        return self._n

    def _put(self, row):
        cols = self._cols
        if isinstance(row, dict):
            index = self.table.index
            unknown = [k for k in row if k not in index]
            if unknown:
                raise ConnectorError(
                    "internal", "table %s has no column(s) %s; its columns are %s"
                    % (self.table.ref, ", ".join(map(repr, unknown)), list(index)))
            for c, values in zip(self.table.columns, cols):
                values.append(row.get(c.name))
        else:
            if len(row) != len(cols):
                raise ConnectorError(
                    "internal", "a row of table %s has %d value(s) but the table has %d column(s)"
                    % (self.table.ref, len(row), len(cols)))
            for v, values in zip(row, cols):
                values.append(v)
        self._n += 1

    def append(self, row):
        """Add one snapshot row."""
        if self.is_changes:
            raise ConnectorError("internal", "use insert/update/delete on a changes builder of %s"
                                 % self.table.ref)
        self._put(row)

    def extend(self, rows):
        """Add several snapshot rows."""
        for row in rows:
            self.append(row)

    def change(self, op, lsn, seq, row=None, unchanged=None):
        """Add one change: `op` one of I, U, B, D, T; `lsn` the commit position of its
        transaction and `seq` its ordinal within it; `unchanged` an optional bitmap
        (bytes) of table columns not sent."""
        if not self.is_changes:
            raise ConnectorError("internal", "use append on a snapshot builder of %s; "
                                 "make a changes builder with Table.changes()" % self.table.ref)
        if op not in OPS:
            raise ConnectorError("internal", "change operation must be one of %s, not %r"
                                 % (", ".join(OPS), op))
        if row is None:
            row = {}
        self._put(row)
        m = self._meta
        m[0].append(op)
        m[1].append(lsn)
        m[2].append(seq)
        m[3].append(unchanged)

    def insert(self, lsn, seq, row):
        """An inserted row."""
        self.change("I", lsn, seq, row)

    def update(self, lsn, seq, row, before=None):
        """An updated row (after-image), preceded by its before-image when given."""
        if before is not None:
            self.change("B", lsn, seq, before)
        self.change("U", lsn, seq, row)

    def upsert(self, lsn, seq, row):
        """A row that is new or replaces the row with the same key (sent as `U`)."""
        self.change("U", lsn, seq, row)

    def delete(self, lsn, seq, key):
        """A deleted row: at least its key columns."""
        self.change("D", lsn, seq, key)

    def truncate(self, lsn, seq):
        """Every row of the table is gone."""
        self.change("T", lsn, seq, None)

    def finish(self):
        """The rows as a `TableRows` (Arrow IPC stream: schema, one record batch, end)."""
        if self.is_changes:
            schema = self.table.changes_schema
            columns = self._meta + self._cols
        else:
            schema = self.table.snapshot_schema
            columns = self._cols
        try:
            ipc = arrow.ipc_stream(schema, [columns])
        except ArrowError as e:
            raise ConnectorError("internal", "table %s: %s" % (self.table.ref, e)) from None
        return TableRows(self.table.ref, self.first_of_table, self._n, ipc)
