"""The SDK outside the Arrow writer: row builders, configuration, positions, host helpers."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

try:
    import pyarrow as pa
    import pyarrow.ipc as ipc
except ImportError:  # pragma: no cover - reported as a skip
    pa = None

import culvert_connector as cc  # noqa: E402
from culvert_connector import host  # noqa: E402

ITEMS = cc.Table("demo", "items", [
    cc.Column.bigint("id").primary_key(),
    cc.Column.text("name"),
    cc.Column.double("amount"),
    cc.Column.timestamptz("at"),
    cc.Column.jsonb("doc"),
    cc.Column.numeric("price"),
])


def decode(rows):
    reader = ipc.open_stream(rows.ipc)
    table = reader.read_all()
    return reader.schema, table


@unittest.skipIf(pa is None, "pyarrow is not installed (pip install pyarrow)")
class RowsTest(unittest.TestCase):
    def test_snapshot_rows_follow_the_conventions(self):
        rows = ITEMS.rows(first_of_table=True)
        rows.append([1, "one", 1.5, None, '{"a": 1}', "1.10"])
        rows.append({"id": 2, "name": None})
        out = rows.finish()
        self.assertEqual((out.table, out.first_of_table, out.row_count), (ITEMS.ref, True, 2))
        schema, table = decode(out)
        self.assertEqual(schema.names, ["id", "name", "amount", "at", "doc", "price"])
        self.assertEqual(json.loads(schema.metadata[b"culvert.primary_key"]), ["id"])
        self.assertEqual(schema.metadata[b"culvert.namespace"], b"demo")
        self.assertEqual(schema.metadata[b"culvert.table"], b"items")
        meta = {f.name: f.metadata for f in schema}
        self.assertEqual(meta["id"][b"culvert.type"], b"bigint")
        self.assertEqual(meta["id"][b"culvert.kind"], b"int8")
        self.assertEqual(meta["id"][b"culvert.key"], b"1")
        self.assertEqual(meta["at"][b"culvert.type"], b"timestamp with time zone")
        self.assertEqual(meta["at"][b"culvert.kind"], b"timestamptz")
        self.assertEqual(meta["doc"][b"culvert.kind"], b"jsonb")
        self.assertEqual(meta["price"][b"culvert.kind"], b"numeric")
        self.assertNotIn(b"culvert.key", meta["name"])
        self.assertFalse(schema.field("id").nullable)
        self.assertEqual(schema.field("at").type, pa.timestamp("us", tz="UTC"))
        self.assertEqual(table.column("id").to_pylist(), [1, 2])
        self.assertEqual(table.column("name").to_pylist(), ["one", None])

    def test_changes_lead_with_the_culvert_columns(self):
        rows = ITEMS.changes()
        rows.insert(10, 0, [1, "one", 1.0, None, None, None])
        rows.update(11, 0, {"id": 1, "name": "uno"}, before={"id": 1, "name": "one"})
        rows.upsert(11, 1, {"id": 2})
        rows.delete(12, 0, {"id": 1})
        rows.truncate(13, 0)
        rows.change("U", 14, 0, {"id": 3}, unchanged=b"\x04")
        out = rows.finish()
        self.assertEqual(out.row_count, 7)
        self.assertFalse(out.first_of_table)
        schema, table = decode(out)
        self.assertEqual(schema.names[:4], ["__culvert_op", "__culvert_lsn", "__culvert_seq",
                                            "__culvert_unchanged"])
        self.assertEqual(schema.field("__culvert_op").type, pa.string())
        self.assertEqual(schema.field("__culvert_lsn").type, pa.uint64())
        self.assertEqual(schema.field("__culvert_seq").type, pa.uint64())
        self.assertEqual(schema.field("__culvert_unchanged").type, pa.binary())
        self.assertTrue(schema.field("id").nullable, "deletes and truncates leave columns empty")
        self.assertEqual(schema.field("id").metadata[b"culvert.key"], b"1")
        self.assertEqual(table.column("__culvert_op").to_pylist(), ["I", "B", "U", "U", "D", "T", "U"])
        self.assertEqual(table.column("__culvert_lsn").to_pylist(), [10, 11, 11, 11, 12, 13, 14])
        self.assertEqual(table.column("__culvert_seq").to_pylist(), [0, 0, 0, 1, 0, 0, 0])
        self.assertEqual(table.column("__culvert_unchanged").to_pylist(),
                         [None] * 6 + [b"\x04"])
        self.assertEqual(table.column("id").to_pylist(), [1, 1, 1, 2, 1, None, 3])

    def test_empty_snapshot_still_carries_the_schema(self):
        out = ITEMS.rows(first_of_table=True).finish()
        schema, table = decode(out)
        self.assertEqual(out.row_count, 0)
        self.assertEqual(table.num_rows, 0)
        self.assertEqual(len(schema), 6)

    def test_every_column_constructor_builds(self):
        cols = [cc.Column.bigint("a"), cc.Column.integer("b"), cc.Column.smallint("c"),
                cc.Column.double("d"), cc.Column.real("e"), cc.Column.boolean("f"),
                cc.Column.text("g"), cc.Column.jsonb("h"), cc.Column.numeric("i"),
                cc.Column.bytea("j"), cc.Column.uuid("k"), cc.Column.date("l"),
                cc.Column.timestamptz("m"), cc.Column.timestamp("n")]
        table = cc.Table("x", "all", cols)
        rows = table.rows()
        rows.append([None] * len(cols))
        schema, _ = decode(rows.finish())
        kinds = [f.metadata[b"culvert.kind"].decode() for f in schema]
        self.assertEqual(kinds, ["int8", "int4", "int2", "float8", "float4", "bool", "text", "jsonb",
                                 "numeric", "bytea", "uuid", "date", "timestamptz", "timestamp"])


class TableTest(unittest.TestCase):
    def test_declaration_errors(self):
        for columns, message in [
            ([], "declares no columns"),
            ([cc.Column.text("a"), cc.Column.text("a")], "declared twice"),
            ([cc.Column.text("__culvert_op")], "reserved"),
        ]:
            with self.assertRaises(cc.ConnectorError) as e:
                cc.Table("n", "t", columns)
            self.assertIn(message, e.exception.message)

    def test_rows_of_the_wrong_shape_are_bugs(self):
        rows = ITEMS.rows()
        with self.assertRaises(cc.ConnectorError) as e:
            rows.append([1, 2])
        self.assertIn("has 2 value(s)", e.exception.message)
        with self.assertRaises(cc.ConnectorError) as e:
            rows.append({"nope": 1})
        self.assertIn("'nope'", e.exception.message)
        rows.append([1, 2, 3.0, None, None, None])
        with self.assertRaises(cc.ConnectorError) as e:
            rows.finish()
        self.assertEqual(e.exception.kind, "internal")
        self.assertIn("demo.items", e.exception.message)
        self.assertIn("'name'", e.exception.message)

    def test_info_reports_keys(self):
        info = ITEMS.info(estimated_rows=7)
        self.assertTrue(info.identifiable)
        self.assertEqual(info.estimated_rows, 7)
        self.assertEqual([(c.name, c.key_ordinal, c.nullable) for c in info.columns[:2]],
                         [("id", 1, False), ("name", None, True)])

    def test_selection_globs(self):
        ref = cc.TableRef("sales", "order_items")
        self.assertTrue(ref.is_selected([]))
        self.assertTrue(ref.is_selected(["sales.*"]))
        self.assertTrue(ref.is_selected(["*.order_*"]))
        self.assertTrue(ref.is_selected(["order_item?"]))
        self.assertTrue(ref.is_selected(["other.*", "sales.order_items"]))
        self.assertFalse(ref.is_selected(["public.*"]))
        self.assertFalse(ref.is_selected(["sales.order"]))
        self.assertFalse(ref.is_selected(["sales.order_item"]))


class ConfigTest(unittest.TestCase):
    CONFIG = cc.Config(
        cc.Int("rows", "Rows to produce.", minimum=0),
        cc.Int("batch_rows", default=1000, minimum=1, maximum=100000),
        cc.Float("ratio", default=0.5, minimum=0),
        cc.Str("url", "Where.", egress=True, url=True),
        cc.Str("token", secret=True),
        cc.Str("mode", default="fast", choices=["fast", "slow"]),
        cc.Bool("discard", default=False),
        cc.StrList("resources", min_items=1),
        title="demo",
    )
    GOOD = {"rows": 5, "url": "http://127.0.0.1:1/x", "token": "t", "resources": ["a"]}

    def parse(self, **changes):
        value = dict(self.GOOD)
        value.update(changes)
        for k in [k for k, v in value.items() if v is Ellipsis]:
            del value[k]
        return self.CONFIG.parse(json.dumps(value))

    def error(self, **changes):
        with self.assertRaises(cc.ConnectorError) as e:
            self.parse(**changes)
        self.assertEqual(e.exception.kind, "config")
        return e.exception.message

    def test_schema(self):
        s = self.CONFIG.schema()
        self.assertEqual(s["type"], "object")
        self.assertEqual(s["title"], "demo")
        self.assertEqual(s["required"], ["rows", "url", "token", "resources"])
        self.assertEqual(s["properties"]["rows"], {"type": "integer", "description": "Rows to produce.",
                                                   "minimum": 0})
        self.assertEqual(s["properties"]["batch_rows"]["default"], 1000)
        self.assertTrue(s["properties"]["url"]["x-culvert-egress"])
        self.assertEqual(s["properties"]["url"]["format"], "uri")
        self.assertTrue(s["properties"]["token"]["writeOnly"])
        self.assertTrue(s["properties"]["token"]["x-culvert-secret"])
        self.assertEqual(s["properties"]["mode"]["enum"], ["fast", "slow"])
        self.assertEqual(s["properties"]["resources"]["items"]["type"], "string")
        self.assertEqual(json.loads(self.CONFIG.spec()), s)

    def test_defaults_and_access(self):
        cfg = self.parse(extra_field_from_the_agent=1)
        self.assertEqual(cfg.rows, 5)
        self.assertEqual(cfg["batch_rows"], 1000)
        self.assertEqual(cfg.ratio, 0.5)
        self.assertEqual(cfg.mode, "fast")
        self.assertIs(cfg.discard, False)
        with self.assertRaises(AttributeError):
            cfg.nope

    def test_errors_name_the_field(self):
        self.assertIn("field `rows` is required: Rows to produce.", self.error(rows=...))
        self.assertIn("field `rows` must be an integer, not \"many\"", self.error(rows="many"))
        self.assertIn("field `rows` must be an integer, not true", self.error(rows=True))
        self.assertIn("field `rows` must be at least 0", self.error(rows=-1))
        self.assertIn("field `batch_rows` must be at most 100000", self.error(batch_rows=10 ** 6))
        self.assertIn("field `ratio` must be a number", self.error(ratio="x"))
        self.assertIn("field `url` must be an absolute http:// or https:// URL", self.error(url="ftp://x"))
        self.assertIn("field `token` must not be empty", self.error(token=""))
        self.assertIn("field `mode` must be one of \"fast\", \"slow\"", self.error(mode="medium"))
        self.assertIn("field `discard` must be true or false", self.error(discard="yes"))
        self.assertIn("field `resources` needs at least 1 entry", self.error(resources=[]))
        self.assertIn("lists \"a\" more than once", self.error(resources=["a", "a"]))
        self.assertIn("must be a list of strings", self.error(resources="a"))

    def test_not_json_or_not_an_object(self):
        with self.assertRaises(cc.ConnectorError) as e:
            self.CONFIG.parse("{nope")
        self.assertIn("not valid JSON", e.exception.message)
        with self.assertRaises(cc.ConnectorError) as e:
            self.CONFIG.parse("[1]")
        self.assertIn("must be a JSON object", e.exception.message)


class PositionTest(unittest.TestCase):
    def test_u64_positions_order_like_numbers(self):
        values = [0, 1, 255, 256, 2 ** 32, 2 ** 64 - 1]
        encoded = [cc.encode_u64(v) for v in values]
        self.assertEqual(encoded, sorted(encoded))
        self.assertEqual([cc.decode_u64(p) for p in encoded], values)
        self.assertEqual(cc.encode_u64(258), b"\0\0\0\0\0\0\x01\x02")

    def test_tuples_and_payloads(self):
        p = cc.encode_u64s(1, 2, 3)
        self.assertEqual(cc.decode_u64s(p, 3), (1, 2, 3))
        self.assertEqual(cc.split_u64(cc.encode_u64(9) + b"rest"), (9, b"rest"))

    def test_foreign_positions_are_state_errors(self):
        for bad in (b"", b"1234567", b"123456789"):
            with self.assertRaises(cc.ConnectorError) as e:
                cc.decode_u64(bad)
            self.assertEqual(e.exception.kind, "state")
        with self.assertRaises(cc.ConnectorError):
            cc.split_u64(b"abc")
        with self.assertRaises(cc.ConnectorError):
            cc.encode_u64(-1)


class ErrorsTest(unittest.TestCase):
    def test_kinds(self):
        for make, kind in [(cc.config_error, "config"), (cc.connection_error, "connection"),
                           (cc.auth_error, "auth"), (cc.permission_error, "permission"),
                           (cc.unsupported_error, "unsupported"), (cc.state_error, "state"),
                           (cc.internal_error, "internal")]:
            e = make("why")
            self.assertEqual((e.kind, e.message), (kind, "why"))
        with self.assertRaises(ValueError):
            cc.ConnectorError("oops", "x")

    def test_check_helpers(self):
        self.assertEqual(cc.Check.run("x", lambda: None), cc.Check("x", True))

        def fail():
            raise cc.auth_error("bad token")

        self.assertEqual(cc.Check.run("x", fail), cc.Check("x", False, "bad token"))


class HostTest(unittest.TestCase):
    def tearDown(self):
        host.set_http_handler(None)

    def test_native_metrics(self):
        host.counter_add("rows_read", 3)
        host.counter_add("rows_read", 4)
        host.gauge_set("lag", 1.5)
        self.assertEqual(host.native_metrics["rows_read"], 7)
        self.assertEqual(host.native_metrics["lag"], 1.5)

    def test_http_goes_through_the_handler(self):
        seen = []

        def handler(method, url, headers, body):
            seen.append((method, url, headers, body))
            return host.Response(200, [("Content-Type", "application/json")], b'{"ok": true}',
                                 method, url)

        host.set_http_handler(handler)
        r = cc.http_json("post", "http://127.0.0.1:9/x?secret=1", {"a": 1}, {"X-Key": "k"})
        self.assertEqual(r.json(), {"ok": True})
        self.assertEqual(r.header("content-type"), "application/json")
        method, url, headers, body = seen[0]
        self.assertEqual(method, "POST")
        self.assertIn(("X-Key", "k"), headers)
        self.assertIn(("content-type", "application/json"), headers)
        self.assertEqual(json.loads(body), {"a": 1})

    def test_statuses_map_to_kinds_without_leaking_the_query(self):
        cases = {401: "auth", 403: "permission", 404: "config", 408: "connection",
                 429: "connection", 503: "connection", 400: "internal"}
        for status, kind in cases.items():
            r = host.Response(status, [], b"nope", "GET", "http://h:1/p?sig=secret")
            with self.assertRaises(cc.ConnectorError) as e:
                r.raise_for_status()
            self.assertEqual(e.exception.kind, kind, status)
            self.assertIn("GET http://h:1/p answered HTTP %d: nope" % status, e.exception.message)
            self.assertNotIn("secret", e.exception.message)
        ok = host.Response(204, [], b"")
        self.assertIs(ok.raise_for_status(), ok)

    def test_json_errors_are_readable(self):
        with self.assertRaises(cc.ConnectorError) as e:
            host.Response(200, [], b"<html>", "GET", "http://h/x").json()
        self.assertIn("not JSON", e.exception.message)


class ExportTest(unittest.TestCase):
    def test_source_check_reports_config_errors(self):
        class S(cc.Source):
            config = cc.Config(cc.Int("rows"))

            def check(self, cfg):
                raise cc.connection_error("cannot reach it")

        s = S()
        self.assertEqual(s._check("{}")[0].ok, False)
        self.assertIn("`rows`", s._check("{}")[0].message)
        results = s._check('{"rows": 1}')
        self.assertEqual([(c.name, c.ok) for c in results], [("config", True), ("connection", False)])
        self.assertEqual(json.loads(s._spec_text())["required"], ["rows"])
        self.assertIsNone(cc.export_source(S), "natively nothing is exported")
        with self.assertRaises(TypeError):
            cc.export_source(object)

    def test_destination_defaults(self):
        class D(cc.Destination):
            pass

        self.assertEqual(D()._spec_text(), '{\n  "type": "object"\n}')
        self.assertEqual([c.ok for c in D()._check("{}")], [True])
        self.assertIsNone(cc.export_destination(D))


if __name__ == "__main__":
    unittest.main()
