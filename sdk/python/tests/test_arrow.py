"""The pure-Python Arrow IPC stream writer, checked against pyarrow's reader."""

import datetime as dt
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

try:
    import pyarrow as pa
    import pyarrow.ipc as ipc
except ImportError:  # pragma: no cover - reported as a skip
    pa = None

from culvert_connector import arrow as A  # noqa: E402

UTC = dt.timezone.utc


def read(data):
    reader = ipc.open_stream(data)
    batches = list(reader)
    for b in batches:
        b.validate(full=True)
    return reader.schema, batches


@unittest.skipIf(pa is None, "pyarrow is not installed (pip install pyarrow)")
class ArrowWriterTest(unittest.TestCase):
    CASES = [
        (A.INT16, pa.int16() if pa else None, [1, -32768, None, 32767]),
        (A.INT32, pa.int32() if pa else None, [1, -(2 ** 31), None, 2 ** 31 - 1]),
        (A.INT64, pa.int64() if pa else None, [0, -(2 ** 63), None, 2 ** 63 - 1]),
        (A.UINT32, pa.uint32() if pa else None, [0, None, 2 ** 32 - 1, 7]),
        (A.UINT64, pa.uint64() if pa else None, [0, 2 ** 64 - 1, None, 42]),
        (A.FLOAT32, pa.float32() if pa else None, [1.5, None, -0.25, 1e10]),
        (A.FLOAT64, pa.float64() if pa else None, [1.5, None, float("inf"), -1e-300]),
        (A.BOOL, pa.bool_() if pa else None, [True, False, None, True, True, False, False, True, True]),
        (A.UTF8, pa.string() if pa else None, ["a", "", None, "héllo ✓", "x" * 1000]),
        (A.BINARY, pa.binary() if pa else None, [b"\x00\xff", b"", None, bytes(range(256))]),
        (A.fixed_size_binary(16), pa.binary(16) if pa else None, [bytes(16), None, bytes(range(16))]),
        (A.DATE32, pa.date32() if pa else None, [dt.date(2024, 2, 29), None, dt.date(1969, 12, 31)]),
        (A.TIMESTAMP_US, pa.timestamp("us") if pa else None,
         [dt.datetime(2024, 1, 2, 3, 4, 5, 678901), None, dt.datetime(1960, 1, 1)]),
        (A.TIMESTAMP_US_UTC, pa.timestamp("us", tz="UTC") if pa else None,
         [dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), None,
          dt.datetime(1960, 1, 1, tzinfo=UTC)]),
    ]

    def test_every_type_round_trips_with_nulls(self):
        for ours, theirs, values in self.CASES:
            with self.subTest(type=ours):
                schema = A.Schema([A.Field("c", ours)])
                got_schema, batches = read(A.ipc_stream(schema, [[values]]))
                self.assertEqual(got_schema.field("c").type, theirs)
                self.assertEqual(len(batches), 1)
                col = batches[0].column(0)
                self.assertEqual(col.null_count, values.count(None))
                got = col.to_pylist()
                if ours in (A.TIMESTAMP_US_UTC,):
                    got = [None if v is None else v.astimezone(UTC) for v in got]
                if ours == A.FLOAT32:
                    self.assertEqual(got, [None if v is None else pa.scalar(v, pa.float32()).as_py()
                                           for v in values])
                else:
                    self.assertEqual(got, values)

    def test_columns_without_nulls_omit_the_validity_buffer(self):
        schema = A.Schema([A.Field("i", A.INT64, nullable=False), A.Field("s", A.UTF8)])
        _, batches = read(A.ipc_stream(schema, [[[1, 2, 3], ["a", "b", "c"]]]))
        self.assertEqual(batches[0].column(0).buffers()[0], None)
        self.assertEqual(batches[0].to_pydict(), {"i": [1, 2, 3], "s": ["a", "b", "c"]})

    def test_integer_timestamps_and_dates_are_taken_as_is(self):
        schema = A.Schema([A.Field("t", A.TIMESTAMP_US_UTC), A.Field("d", A.DATE32)])
        _, batches = read(A.ipc_stream(schema, [[[1_000_000], [1]]]))
        self.assertEqual(batches[0].column(0).cast(pa.int64()).to_pylist(), [1_000_000])
        self.assertEqual(batches[0].column(1).to_pylist(), [dt.date(1970, 1, 2)])

    def test_nullability_and_metadata(self):
        schema = A.Schema(
            [
                A.Field("id", A.INT64, nullable=False, metadata={"culvert.type": "bigint", "k": ""}),
                A.Field("name", A.UTF8, metadata={"culvert.type": "text"}),
            ],
            metadata={"culvert.primary_key": '["id"]', "ünïcode": "✓"},
        )
        got, _ = read(A.ipc_stream(schema, [[[1], ["x"]]]))
        self.assertFalse(got.field("id").nullable)
        self.assertTrue(got.field("name").nullable)
        self.assertEqual(got.field("id").metadata, {b"culvert.type": b"bigint", b"k": b""})
        self.assertEqual(got.field("name").metadata, {b"culvert.type": b"text"})
        self.assertEqual(got.metadata, {b"culvert.primary_key": b'["id"]',
                                        "ünïcode".encode(): "✓".encode()})
        self.assertEqual(got.names, ["id", "name"])

    def test_empty_batch(self):
        schema = A.Schema([A.Field(t.name, t) for t, _, _ in self.CASES])
        got, batches = read(A.ipc_stream(schema, [[[] for _ in self.CASES]]))
        self.assertEqual(len(got), len(self.CASES))
        self.assertEqual(batches[0].num_rows, 0)

    def test_schema_only_stream(self):
        schema = A.Schema([A.Field("a", A.INT64)])
        got, batches = read(A.ipc_stream(schema, []))
        self.assertEqual(got.names, ["a"])
        self.assertEqual(batches, [])

    def test_multiple_batches(self):
        schema = A.Schema([A.Field("i", A.INT64), A.Field("s", A.UTF8), A.Field("b", A.BOOL)])
        batches = [
            [[1, 2], ["a", None], [True, None]],
            [[], [], []],
            [[3, None, 5], ["c", "dd", "eee"], [False, True, False]],
        ]
        _, got = read(A.ipc_stream(schema, batches))
        self.assertEqual([b.num_rows for b in got], [2, 0, 3])
        table = pa.Table.from_batches(got)
        self.assertEqual(table.column("i").to_pylist(), [1, 2, 3, None, 5])
        self.assertEqual(table.column("s").to_pylist(), ["a", None, "c", "dd", "eee"])
        self.assertEqual(table.column("b").to_pylist(), [True, None, False, True, False])

    def test_wide_and_long_batches(self):
        n = 5000
        fields = [A.Field("c%d" % i, A.INT64 if i % 2 else A.UTF8) for i in range(40)]
        cols = [list(range(n)) if i % 2 else ["v%d" % j for j in range(n)] for i in range(40)]
        _, got = read(A.ipc_stream(A.Schema(fields), [cols]))
        self.assertEqual(got[0].num_rows, n)
        self.assertEqual(got[0].column(39).to_pylist()[-1], n - 1)
        self.assertEqual(got[0].column(38).to_pylist()[-1], "v%d" % (n - 1))

    def test_messages_are_8_byte_aligned_and_stream_ends_with_marker(self):
        schema = A.Schema([A.Field("s", A.UTF8, metadata={"x": "yz"})])
        w = A.StreamWriter(schema)
        for message in (w.schema_message(), w.record_batch([["abc", None, "de"]])):
            self.assertEqual(len(message) % 8, 0)
            self.assertEqual(message[:4], b"\xff\xff\xff\xff")
            meta_len = int.from_bytes(message[4:8], "little")
            self.assertEqual(meta_len % 8, 0)
        self.assertEqual(w.end(), b"\xff\xff\xff\xff\x00\x00\x00\x00")

    def test_bad_values_name_the_column(self):
        cases = [
            (A.Field("n", A.INT64, nullable=False), [None], "not nullable"),
            (A.Field("i", A.INT32), [2 ** 31], "does not fit"),
            (A.Field("u", A.UINT64), [-1], "does not fit"),
            (A.Field("s", A.UTF8), [b"bytes"], "expected str"),
            (A.Field("b", A.BINARY), ["text"], "expected bytes"),
            (A.Field("f", A.fixed_size_binary(4)), [b"abc"], "expected 4 bytes"),
            (A.Field("t", A.TIMESTAMP_US_UTC), ["2024-01-01"], "expected a datetime"),
        ]
        for field, values, message in cases:
            with self.subTest(field=field):
                with self.assertRaises(A.ArrowError) as e:
                    A.ipc_stream(A.Schema([field]), [[values]])
                self.assertIn(repr(field.name), str(e.exception))
                self.assertIn(message, str(e.exception))
        with self.assertRaises(A.ArrowError):
            A.ipc_stream(A.Schema([A.Field("a", A.INT64), A.Field("b", A.INT64)]), [[[1], [1, 2]]])
        with self.assertRaises(A.ArrowError):
            A.Schema([A.Field("a", A.INT64), A.Field("a", A.UTF8)])


if __name__ == "__main__":
    unittest.main()
