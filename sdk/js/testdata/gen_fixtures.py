"""Writes the Arrow IPC stream fixtures the SDK tests decode, the way the Rust side
(arrow-rs, the PostgreSQL connectors) lays them out. Regenerate with
`~/.cache/culvert/venv/bin/python sdk/js/testdata/gen_fixtures.py` (needs pyarrow)."""

import json
import pathlib
import uuid

import pyarrow as pa

HERE = pathlib.Path(__file__).parent


def field(name, typ, source_type, kind, key=None):
    meta = {"culvert.type": source_type, "culvert.kind": kind}
    if key is not None:
        meta["culvert.key"] = str(key)
    return pa.field(name, typ, nullable=True, metadata=meta)


TABLE_FIELDS = [
    field("id", pa.int64(), "bigint", "int8", key=1),
    field("qty", pa.int32(), "integer", "int4"),
    field("price", pa.float64(), "double precision", "float8"),
    field("name", pa.utf8(), "text", "text"),
    field("active", pa.bool_(), "boolean", "bool"),
    field("blob", pa.binary(), "bytea", "bytea"),
    field("created", pa.timestamp("us", tz="UTC"), "timestamp with time zone", "timestamptz"),
    field("local", pa.timestamp("us"), "timestamp without time zone", "timestamp"),
    field("day", pa.date32(), "date", "date"),
    field("uid", pa.binary(16), "uuid", "uuid"),
]
SCHEMA_META = {
    "culvert.primary_key": json.dumps(["id"]),
    "culvert.namespace": "public",
    "culvert.table": "things",
}

UID = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0").bytes
# 2024-01-02T03:04:05.123456Z in microseconds.
TS = 1704164645123456


def table_columns(ids):
    n = len(ids)
    return [
        pa.array(ids, pa.int64()),
        pa.array([7, None, -3][:n], pa.int32()),
        pa.array([1.5, 2.25, None][:n], pa.float64()),
        pa.array(["héllo", None, "z"][:n], pa.utf8()),
        pa.array([True, False, None][:n], pa.bool_()),
        pa.array([b"\x00\x01\xff", None, b""][:n], pa.binary()),
        pa.array([TS, None, 0][:n], pa.timestamp("us", tz="UTC")),
        pa.array([TS, 1, None][:n], pa.timestamp("us")),
        pa.array([19724, None, 0][:n], pa.date32()),
        pa.array([UID, None, UID][:n], pa.binary(16)),
    ]


def write(name, schema, batches):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        for b in batches:
            w.write_batch(b)
    (HERE / name).write_bytes(sink.getvalue().to_pybytes())


snapshot_schema = pa.schema(TABLE_FIELDS, metadata=SCHEMA_META)
big = 2**63 - 1
write(
    "snapshot.arrows",
    snapshot_schema,
    [
        pa.record_batch(table_columns([1, big, -(2**63)]), schema=snapshot_schema),
        # A second record batch in the same stream: decoders must read all of them.
        pa.record_batch(table_columns([4]), schema=snapshot_schema),
    ],
)

change_fields = [
    pa.field("__culvert_op", pa.utf8(), nullable=False),
    pa.field("__culvert_lsn", pa.uint64(), nullable=False),
    pa.field("__culvert_seq", pa.uint64(), nullable=False),
    pa.field("__culvert_unchanged", pa.binary(), nullable=True),
] + TABLE_FIELDS
changes_schema = pa.schema(change_fields, metadata=SCHEMA_META)
ops = ["I", "B", "U", "U", "D", "T"]
lsn = [100, 200, 200, 2**64 - 1, 300, 400]
seq = [0, 1, 1, 0, 0, 0]
# Bit 3 (`name`) of the second U is an unchanged large value.
unchanged = [None, None, None, bytes([0b1000]), None, None]
ids = [1, 1, 1, 2, 3, None]
cols = [
    pa.array(ops, pa.utf8()),
    pa.array(lsn, pa.uint64()),
    pa.array(seq, pa.uint64()),
    pa.array(unchanged, pa.binary()),
    pa.array(ids, pa.int64()),
    pa.array([7, 7, 8, 9, None, None], pa.int32()),
    pa.array([None] * 6, pa.float64()),
    pa.array(["a", "a", "b", None, None, None], pa.utf8()),
    pa.array([None] * 6, pa.bool_()),
    pa.array([None] * 6, pa.binary()),
    pa.array([None] * 6, pa.timestamp("us", tz="UTC")),
    pa.array([None] * 6, pa.timestamp("us")),
    pa.array([None] * 6, pa.date32()),
    pa.array([None] * 6, pa.binary(16)),
]
write("changes.arrows", changes_schema, [pa.record_batch(cols, schema=changes_schema)])
print("wrote", sorted(p.name for p in HERE.glob("*.arrows")))
