"""Arrow IPC *stream* writer in pure Python.

Connectors built with componentize-py cannot load native extensions such as pyarrow,
so the schema and record-batch messages are written here by hand, following the Arrow
columnar format: each message is a continuation marker, the length of its flatbuffer
metadata (padded to 8 bytes), the metadata (a `Message` flatbuffer), then the body
buffers, each padded to 8 bytes. The stream ends with the end-of-stream marker.

Supported column types: the ones listed in `__all__` below (fixed-width integers and
floats, bool, utf8, binary, fixed-size binary, date32 and timestamp in microseconds),
all nullable through validity bitmaps, with field and schema metadata.
"""

import datetime as _dt
import struct

__all__ = [
    "DataType",
    "INT16",
    "INT32",
    "INT64",
    "UINT32",
    "UINT64",
    "FLOAT32",
    "FLOAT64",
    "BOOL",
    "UTF8",
    "BINARY",
    "DATE32",
    "TIMESTAMP_US",
    "TIMESTAMP_US_UTC",
    "fixed_size_binary",
    "timestamp_us",
    "Field",
    "Schema",
    "StreamWriter",
    "ipc_stream",
    "ArrowError",
]


class ArrowError(ValueError):
    """A value does not fit its column, or a schema cannot be written."""


# ---------------------------------------------------------------------------------------
# A minimal flatbuffer serializer.
#
# Objects are laid out front to back: a table is preceded by its vtable and followed by
# the objects it refers to, so every unsigned offset points forward as the format demands.
# The buffer starts 8-byte aligned inside the message, so absolute positions give the
# natural alignment of every scalar.
# ---------------------------------------------------------------------------------------

_SCALAR = {
    "u8": ("<B", 1),
    "bool": ("<?", 1),
    "i16": ("<h", 2),
    "i32": ("<i", 4),
    "i64": ("<q", 8),
}


class _Table:
    """A flatbuffer table: `fields` maps field id to (kind, value)."""

    __slots__ = ("fields",)

    def __init__(self, fields):
        self.fields = fields


class _Vec:
    """A vector of tables/strings (`kind` "offset") or of fixed-size structs (`kind` "struct")."""

    __slots__ = ("kind", "items", "fmt", "size")

    def __init__(self, kind, items, fmt="", size=0):
        self.kind = kind
        self.items = items
        self.fmt = fmt
        self.size = size


class _Builder:
    def __init__(self):
        self.buf = bytearray()

    def _pad_to(self, align, extra=0):
        # Pad so that `len(buf) + extra` is a multiple of `align`.
        rem = (len(self.buf) + extra) % align
        if rem:
            self.buf.extend(b"\0" * (align - rem))

    def finish(self, root):
        self.buf.extend(b"\0\0\0\0")
        pos = self._write(root)
        struct.pack_into("<I", self.buf, 0, pos)
        self._pad_to(8)
        return bytes(self.buf)

    def _write(self, obj):
        if isinstance(obj, _Table):
            return self._write_table(obj)
        if isinstance(obj, _Vec):
            return self._write_vec(obj)
        if isinstance(obj, str):
            obj = obj.encode("utf-8")
        if isinstance(obj, (bytes, bytearray)):
            self._pad_to(4)
            pos = len(self.buf)
            self.buf.extend(struct.pack("<I", len(obj)))
            self.buf.extend(obj)
            self.buf.append(0)
            return pos
        raise TypeError("cannot serialize %r" % (obj,))

    def _write_table(self, table):
        ids = sorted(table.fields)
        nslots = (ids[-1] + 1) if ids else 0
        vt_size = 4 + 2 * nslots
        self._pad_to(2)
        vt_pos = len(self.buf)
        start = vt_pos + vt_size
        start += (-start) % 4
        # Largest fields first keeps padding small; positions are absolute.
        order = sorted(ids, key=lambda i: -self._size(table.fields[i][0]))
        cursor = start + 4
        where = {}
        for fid in order:
            size = self._size(table.fields[fid][0])
            cursor += (-cursor) % size
            where[fid] = cursor
            cursor += size
        tbl_size = cursor - start
        vtable = [vt_size, tbl_size] + [where[i] - start if i in where else 0 for i in range(nslots)]
        self.buf.extend(struct.pack("<%dH" % len(vtable), *vtable))
        self.buf.extend(b"\0" * (start - len(self.buf)))
        body = bytearray(tbl_size)
        struct.pack_into("<i", body, 0, start - vt_pos)
        pending = []
        for fid in ids:
            kind, value = table.fields[fid]
            off = where[fid] - start
            if kind == "offset":
                pending.append((where[fid], value))
            else:
                struct.pack_into(_SCALAR[kind][0], body, off, value)
        self.buf.extend(body)
        for slot, child in pending:
            pos = self._write(child)
            struct.pack_into("<I", self.buf, slot, pos - slot)
        return start

    @staticmethod
    def _size(kind):
        return 4 if kind == "offset" else _SCALAR[kind][1]

    def _write_vec(self, vec):
        n = len(vec.items)
        if vec.kind == "struct":
            # The length prefix sits right before 8-byte aligned elements.
            self._pad_to(8, 4)
            pos = len(self.buf)
            self.buf.extend(struct.pack("<I", n))
            for item in vec.items:
                self.buf.extend(struct.pack(vec.fmt, *item))
            return pos
        self._pad_to(4)
        pos = len(self.buf)
        self.buf.extend(struct.pack("<I", n))
        slots = len(self.buf)
        self.buf.extend(b"\0" * (4 * n))
        for i, item in enumerate(vec.items):
            slot = slots + 4 * i
            child = self._write(item)
            struct.pack_into("<I", self.buf, slot, child - slot)
        return pos


# ---------------------------------------------------------------------------------------
# Data types.
# ---------------------------------------------------------------------------------------

# Type union tags of Schema.fbs.
_T_INT, _T_FLOAT, _T_BINARY, _T_UTF8, _T_BOOL = 2, 3, 4, 5, 6
_T_DATE, _T_TIMESTAMP, _T_FIXED_BINARY = 8, 10, 15


class DataType:
    """An Arrow data type this writer can fill."""

    __slots__ = ("name", "tag", "fmt", "width", "tz", "_fb")

    def __init__(self, name, tag, fmt=None, width=0, tz=None, fb=None):
        self.name = name
        self.tag = tag
        self.fmt = fmt
        self.width = width
        self.tz = tz
        self._fb = fb or {}

    def _flatbuffer(self):
        return _Table(dict(self._fb))

    def __eq__(self, other):
        return isinstance(other, DataType) and (self.name, self.width, self.tz) == (
            other.name,
            other.width,
            other.tz,
        )

    def __hash__(self):
        return hash((self.name, self.width, self.tz))

    def __repr__(self):
        return self.name


def _int(bits, signed):
    fmt = {(16, True): "h", (32, True): "i", (64, True): "q", (32, False): "I", (64, False): "Q"}
    name = ("int%d" if signed else "uint%d") % bits
    return DataType(name, _T_INT, fmt[(bits, signed)], bits // 8,
                    fb={0: ("i32", bits), 1: ("bool", signed)})


INT16 = _int(16, True)
INT32 = _int(32, True)
INT64 = _int(64, True)
UINT32 = _int(32, False)
UINT64 = _int(64, False)
FLOAT32 = DataType("float32", _T_FLOAT, "f", 4, fb={0: ("i16", 1)})
FLOAT64 = DataType("float64", _T_FLOAT, "d", 8, fb={0: ("i16", 2)})
BOOL = DataType("bool", _T_BOOL)
UTF8 = DataType("utf8", _T_UTF8)
BINARY = DataType("binary", _T_BINARY)
# DateUnit DAY = 0.
DATE32 = DataType("date32", _T_DATE, "i", 4, fb={0: ("i16", 0)})


def timestamp_us(tz=None):
    """Timestamp in microseconds since the Unix epoch; `tz` (for example "UTC") or naive."""
    fb = {0: ("i16", 2)}
    if tz:
        fb[1] = ("offset", tz)
    return DataType("timestamp[us]" if not tz else "timestamp[us, %s]" % tz, _T_TIMESTAMP,
                    "q", 8, tz=tz, fb=fb)


TIMESTAMP_US = timestamp_us()
TIMESTAMP_US_UTC = timestamp_us("UTC")


def fixed_size_binary(width):
    """Binary values of exactly `width` bytes (16 for a UUID)."""
    if width <= 0:
        raise ArrowError("fixed-size binary width must be positive, not %d" % width)
    return DataType("fixed_size_binary[%d]" % width, _T_FIXED_BINARY, None, width,
                    fb={0: ("i32", width)})


class Field:
    """A named column with its type, nullability and metadata (a dict of strings)."""

    __slots__ = ("name", "type", "nullable", "metadata")

    def __init__(self, name, type, nullable=True, metadata=None):
        if not isinstance(type, DataType):
            raise ArrowError("field %r: type must be an arrow.DataType, not %r" % (name, type))
        self.name = name
        self.type = type
        self.nullable = nullable
        self.metadata = dict(metadata or {})

    def __repr__(self):
        return "Field(%r, %r, nullable=%r)" % (self.name, self.type, self.nullable)


def _key_values(meta):
    return _Vec("offset", [_Table({0: ("offset", k), 1: ("offset", v)})
                           for k, v in sorted(meta.items())])


class Schema:
    """Fields in order plus schema metadata (a dict of strings)."""

    __slots__ = ("fields", "metadata")

    def __init__(self, fields, metadata=None):
        names = set()
        for f in fields:
            if f.name in names:
                raise ArrowError("field %r appears twice in the schema" % f.name)
            names.add(f.name)
        self.fields = list(fields)
        self.metadata = dict(metadata or {})

    def _flatbuffer(self):
        fields = []
        for f in self.fields:
            entry = {
                0: ("offset", f.name),
                1: ("bool", bool(f.nullable)),
                2: ("u8", f.type.tag),
                3: ("offset", f.type._flatbuffer()),
                5: ("offset", _Vec("offset", [])),
            }
            if f.metadata:
                entry[6] = ("offset", _key_values(f.metadata))
            fields.append(_Table(entry))
        schema = {0: ("i16", 0), 1: ("offset", _Vec("offset", fields))}
        if self.metadata:
            schema[2] = ("offset", _key_values(self.metadata))
        return _Table(schema)


# ---------------------------------------------------------------------------------------
# Messages.
# ---------------------------------------------------------------------------------------

_CONTINUATION = b"\xff\xff\xff\xff"
_EOS = _CONTINUATION + b"\0\0\0\0"
_V5 = 4
_H_SCHEMA, _H_RECORD_BATCH = 1, 3
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_EPOCH_DATE = _dt.date(1970, 1, 1)
_US = _dt.timedelta(microseconds=1)


def _message(header_type, header, body_length):
    meta = _Builder().finish(_Table({
        0: ("i16", _V5),
        1: ("u8", header_type),
        2: ("offset", header),
        3: ("i64", body_length),
    }))
    return _CONTINUATION + struct.pack("<i", len(meta)) + meta


def _bitmap(flags):
    """LSB-first bitmap of an iterable of truthy values."""
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def _micros(value, field):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return (value - _EPOCH) // _US
    raise ArrowError("column %r: expected a datetime or microseconds since the epoch, got %r"
                     % (field.name, value))


def _days(value, field):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, _dt.datetime):
        value = value.date()
    if isinstance(value, _dt.date):
        return (value - _EPOCH_DATE).days
    raise ArrowError("column %r: expected a date or days since the epoch, got %r"
                     % (field.name, value))


def _encode_column(field, values, n):
    """(null_count, [buffers]) for one column of `n` values (None is null)."""
    t = field.type
    null_count = 0
    for v in values:
        if v is None:
            null_count += 1
    if null_count and not field.nullable:
        raise ArrowError("column %r is not nullable but holds %d null value(s)"
                         % (field.name, null_count))
    validity = _bitmap([v is not None for v in values]) if null_count else b""
    try:
        if t.tag in (_T_INT, _T_FLOAT, _T_DATE, _T_TIMESTAMP):
            if t.tag == _T_TIMESTAMP:
                vals = [0 if v is None else _micros(v, field) for v in values]
            elif t.tag == _T_DATE:
                vals = [0 if v is None else _days(v, field) for v in values]
            elif null_count:
                vals = [0 if v is None else v for v in values]
            else:
                vals = values
            return null_count, [validity, struct.pack("<%d%s" % (n, t.fmt), *vals)]
        if t.tag == _T_BOOL:
            return null_count, [validity, _bitmap(values)]
        if t.tag in (_T_UTF8, _T_BINARY):
            text = t.tag == _T_UTF8
            parts = []
            offsets = [0] * (n + 1)
            total = 0
            for i, v in enumerate(values):
                if v is not None:
                    if text:
                        if not isinstance(v, str):
                            raise ArrowError("column %r: expected str, got %r" % (field.name, v))
                        v = v.encode("utf-8")
                    elif not isinstance(v, (bytes, bytearray, memoryview)):
                        raise ArrowError("column %r: expected bytes, got %r" % (field.name, v))
                    parts.append(v)
                    total += len(v)
                offsets[i + 1] = total
            if total > 0x7FFFFFFF:
                raise ArrowError("column %r: more than 2 GiB of data in one batch; send fewer rows"
                                 % field.name)
            return null_count, [validity, struct.pack("<%di" % (n + 1), *offsets), b"".join(parts)]
        if t.tag == _T_FIXED_BINARY:
            blank = b"\0" * t.width
            out = []
            for v in values:
                if v is None:
                    out.append(blank)
                elif len(v) != t.width:
                    raise ArrowError("column %r: expected %d bytes, got %d"
                                     % (field.name, t.width, len(v)))
                else:
                    out.append(bytes(v))
            return null_count, [validity, b"".join(out)]
    except struct.error as e:
        raise ArrowError("column %r (%s): a value does not fit: %s" % (field.name, t, e)) from None
    raise ArrowError("column %r: unsupported type %s" % (field.name, t))


class StreamWriter:
    """Writes one Arrow IPC stream: `schema_message()` first, then record batches, then `end()`.

    Most callers want `ipc_stream(schema, batches)`, which does all three.
    """

    def __init__(self, schema):
        self.schema = schema

    def schema_message(self):
        """The schema message that opens the stream."""
        return _message(_H_SCHEMA, self.schema._flatbuffer(), 0)

    def record_batch(self, columns, num_rows=None):
        """One record batch message from `columns`: a list of per-column value lists."""
        fields = self.schema.fields
        if len(columns) != len(fields):
            raise ArrowError("the batch has %d column(s) but the schema has %d"
                             % (len(columns), len(fields)))
        if num_rows is None:
            num_rows = len(columns[0]) if columns else 0
        nodes = []
        buffers = []
        body = []
        offset = 0
        for field, values in zip(fields, columns):
            if len(values) != num_rows:
                raise ArrowError("column %r has %d value(s) but the batch has %d row(s)"
                                 % (field.name, len(values), num_rows))
            null_count, bufs = _encode_column(field, values, num_rows)
            nodes.append((num_rows, null_count))
            for b in bufs:
                buffers.append((offset, len(b)))
                pad = (-len(b)) % 8
                body.append(b)
                if pad:
                    body.append(b"\0" * pad)
                offset += len(b) + pad
        header = _Table({
            0: ("i64", num_rows),
            1: ("offset", _Vec("struct", nodes, "<qq", 16)),
            2: ("offset", _Vec("struct", buffers, "<qq", 16)),
        })
        return _message(_H_RECORD_BATCH, header, offset) + b"".join(body)

    @staticmethod
    def end():
        """The end-of-stream marker."""
        return _EOS


def ipc_stream(schema, batches):
    """A complete IPC stream: the schema, each batch (a list of column value lists), the end."""
    w = StreamWriter(schema)
    parts = [w.schema_message()]
    for columns in batches:
        parts.append(w.record_batch(columns))
    parts.append(w.end())
    return b"".join(parts)
