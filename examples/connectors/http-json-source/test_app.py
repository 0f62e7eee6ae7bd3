"""Native tests of http-json-source against test_server.py:
`python3 -m unittest` in this directory (pyarrow, when installed, also decodes the rows).

The connector's classes run directly with plain Python; `host.http` then uses urllib.
"""

import json
import os
import sys
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("CULVERT_PYTHON_SDK", os.path.join(HERE, "..", "..", "..", "sdk", "python")))
sys.path.insert(0, HERE)

import app  # noqa: E402
import test_server  # noqa: E402
from culvert_connector import ConnectorError, split_u64  # noqa: E402

try:
    import pyarrow.ipc as ipc
except ImportError:
    ipc = None


class Api:
    """A test server and helpers around it."""

    def __init__(self, **kw):
        self.server = test_server.serve(0, **kw)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def post(self, path, value, token="secret"):
        req = urllib.request.Request(self.url + path, data=json.dumps(value).encode(),
                                     headers={"Authorization": "Bearer " + token}, method="POST")
        with urllib.request.urlopen(req) as r:
            return json.load(r)

    def config(self, **changes):
        cfg = {"base_url": self.url, "token": "secret", "resources": ["orders", "customers"],
               "page_size": 40, "poll_seconds": 0}
        cfg.update(changes)
        return json.dumps(cfg)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def open_reader(config, resume=None, selection=()):
    source = app.HttpJsonSource()
    return source.open(source.parse_config(config), list(selection), resume)


def drain(reader, max_rows=1000, limit=1000):
    batches = []
    for _ in range(limit):
        b = reader.next(max_rows)
        if b is None:
            return batches
        batches.append(b)
    raise AssertionError("the reader never went idle")


def keyed(batches):
    """The rows a keyed destination ends up with: {(table, id): row}."""
    out = {}
    for b in batches:
        for t in b.tables:
            rows = ipc.open_stream(t.ipc).read_all().to_pylist()
            if t.first_of_table:
                out = {k: v for k, v in out.items() if k[0] != str(t.table)}
            for row in rows:
                op = row.pop("__culvert_op", None)
                for k in ("__culvert_lsn", "__culvert_seq", "__culvert_unchanged"):
                    row.pop(k, None)
                if op == "D":
                    out.pop((str(t.table), row["id"]), None)
                else:
                    out[(str(t.table), row["id"])] = row
    return out


class HttpJsonSourceTest(unittest.TestCase):
    def setUp(self):
        self.api = Api(items=100)

    def tearDown(self):
        self.api.close()

    def test_snapshot_pages_then_idle(self):
        batches = drain(open_reader(self.api.config()))
        self.assertEqual([b.kind for b in batches], ["snapshot"] * 6)
        self.assertEqual([(str(b.tables[0].table), b.tables[0].row_count, b.tables[0].first_of_table)
                          for b in batches],
                         [("api.orders", 40, True), ("api.orders", 40, False), ("api.orders", 20, False),
                          ("api.customers", 40, True), ("api.customers", 40, False),
                          ("api.customers", 20, False)])
        positions = [b.position for b in batches]
        self.assertEqual(positions, sorted(set(positions)))

    def test_max_rows_caps_the_page(self):
        batches = drain(open_reader(self.api.config(resources=["orders"])), max_rows=30)
        self.assertEqual([b.tables[0].row_count for b in batches], [30, 30, 30, 10])

    @unittest.skipIf(ipc is None, "pyarrow is not installed")
    def test_rows_and_declared_columns(self):
        columns = {"orders": {"id": "bigint", "name": "text", "amount": "double precision",
                              "active": "boolean", "tags": "jsonb", "updated_at": "timestamptz"}}
        batches = drain(open_reader(self.api.config(columns=columns)))
        schema = ipc.open_stream(batches[0].tables[0].ipc).schema
        self.assertEqual(schema.names, ["id", "name", "amount", "active", "tags", "updated_at"])
        self.assertEqual(json.loads(schema.metadata[b"culvert.primary_key"]), ["id"])
        rows = keyed(batches)
        self.assertEqual(len(rows), 200)
        first = rows[("api.orders", 1)]
        self.assertEqual(first["name"], "orders charlie 1")
        self.assertIsInstance(first["amount"], float)
        self.assertEqual(json.loads(first["tags"]), ["bravo", "charlie"])
        self.assertEqual(first["updated_at"].isoformat(), "2024-01-01T00:00:01+00:00")
        customer = rows[("api.customers", "1")]
        self.assertEqual(sorted(customer), ["id", "item", "updated_at"])
        self.assertEqual(json.loads(customer["item"])["id"], 1)

    @unittest.skipIf(ipc is None, "pyarrow is not installed")
    def test_changes_after_the_snapshot(self):
        reader = open_reader(self.api.config())
        snapshot = drain(reader)
        self.api.post("/orders", {"id": 7, "amount": 1.5})
        self.api.post("/customers", {"name": "new customer"})
        self.api.post("/orders", {"id": 7, "name": "renamed"})
        changes = drain(reader)
        self.assertEqual([b.kind for b in changes], ["changes", "changes"])
        self.assertEqual([str(b.tables[0].table) for b in changes], ["api.orders", "api.customers"])
        table = ipc.open_stream(changes[0].tables[0].ipc).read_all().to_pylist()
        self.assertEqual([(r["__culvert_op"], r["id"]) for r in table], [("U", "7")])
        self.assertEqual(json.loads(table[0]["item"])["name"], "renamed")
        table = ipc.open_stream(changes[1].tables[0].ipc).read_all().to_pylist()
        self.assertEqual([(r["__culvert_op"], r["id"]) for r in table], [("I", "101")])
        self.assertLess(snapshot[-1].position, changes[0].position)
        self.assertEqual(drain(reader), [], "nothing new: idle")

    @unittest.skipIf(ipc is None, "pyarrow is not installed")
    def test_resume_from_every_position_yields_exactly_the_rest(self):
        config = self.api.config(page_size=30)
        everything = drain(open_reader(config))
        for k, batch in enumerate(everything):
            rest = drain(open_reader(config, resume=batch.position))
            self.assertEqual([b.position for b in rest], [b.position for b in everything[k + 1:]],
                             "resume after batch %d" % k)
            self.assertEqual([b.tables[0].ipc for b in rest],
                             [b.tables[0].ipc for b in everything[k + 1:]])

    @unittest.skipIf(ipc is None, "pyarrow is not installed")
    def test_resume_after_changes_converges(self):
        config = self.api.config(page_size=30)
        reader = open_reader(config)
        everything = drain(reader)
        self.api.post("/orders", {"id": 3, "amount": 2.0})
        self.api.post("/orders", {"name": "added"})
        everything += drain(reader)
        self.assertEqual(everything[-1].kind, "changes")
        final = keyed(everything)
        self.assertEqual(final[("api.orders", "3")]["item"], json.dumps(
            json.loads(final[("api.orders", "3")]["item"]), separators=(",", ":"), sort_keys=True))
        self.assertEqual(json.loads(final[("api.orders", "3")]["item"])["amount"], 2.0)
        for k, batch in enumerate(everything):
            rest = drain(open_reader(config, resume=batch.position))
            self.assertEqual(keyed(everything[:k + 1] + rest), final, "resume after batch %d" % k)

    def test_selection_skips_tables(self):
        batches = drain(open_reader(self.api.config(), selection=["api.customers"]))
        tables = {str(t.table) for b in batches for t in b.tables}
        self.assertEqual(tables, {"api.customers"})

    def test_retries_then_succeeds(self):
        self.api.post("/_fail", {"status": 503, "count": 2})
        app.Api.FIRST_WAIT, saved = 0.01, app.Api.FIRST_WAIT
        try:
            batches = drain(open_reader(self.api.config(resources=["orders"])))
        finally:
            app.Api.FIRST_WAIT = saved
        self.assertEqual(self.api.server.store.stats["failed"], 2)
        self.assertEqual(sum(b.tables[0].row_count for b in batches), 100)

    def test_persistent_failures_are_connection_errors(self):
        self.api.post("/_fail", {"status": 429, "count": 10})
        with self.assertRaises(ConnectorError) as e:
            drain(open_reader(self.api.config(resources=["orders"])))
        self.assertEqual(e.exception.kind, "connection")
        self.assertIn("HTTP 429 after 3 retries", e.exception.message)

    def test_errors_say_what_to_fix(self):
        source = app.HttpJsonSource()
        results = source._check(self.api.config(token="wrong"))
        self.assertEqual([(c.name, c.ok) for c in results], [("config", True), ("read orders", False)])
        self.assertIn("refused the token", results[1].message)
        self.assertIn("`token`", results[1].message)
        results = source._check(self.api.config(resources=["orders", "nope"]))
        self.assertEqual([(c.name, c.ok) for c in results],
                         [("config", True), ("read orders", True), ("read nope", False)])
        self.assertIn("check `base_url` and the names in `resources`", results[2].message)
        with self.assertRaises(ConnectorError) as e:
            drain(open_reader(self.api.config(token="wrong")))
        self.assertEqual(e.exception.kind, "auth")
        results = source._check(self.api.config(base_url="http://127.0.0.1:1"))
        self.assertFalse(results[1].ok)
        self.assertIn("failed", results[1].message)

    def test_config_errors_name_the_field(self):
        source = app.HttpJsonSource()
        for changes, text in [
            ({"resources": []}, "`resources` needs at least 1"),
            ({"resources": ["a/b"]}, "`resources`"),
            ({"page_size": 0}, "`page_size` must be at least 1"),
            ({"base_url": "localhost:1"}, "`base_url` must be an absolute"),
            ({"columns": {"orders": {"name": "text"}}}, "`columns.orders` must declare `id`"),
            ({"columns": {"orders": {"id": "uuid"}}}, "`columns.orders.id`: type \"uuid\""),
            ({"columns": {"other": {"id": "text"}}}, "`columns` describes other"),
        ]:
            results = source._check(self.api.config(**changes))
            self.assertFalse(results[0].ok, changes)
            self.assertIn(text, results[0].message)

    def test_foreign_positions_are_state_errors(self):
        reader = open_reader(self.api.config())
        position = reader.next(1000).position
        counter, payload = split_u64(position)
        self.assertEqual(counter, 1)
        with self.assertRaises(ConnectorError) as e:
            open_reader(self.api.config(resources=["orders"]), resume=position)
        self.assertEqual(e.exception.kind, "state")
        self.assertIn("restore the list", e.exception.message)
        with self.assertRaises(ConnectorError) as e:
            open_reader(self.api.config(), resume=b"\0" * 8 + b"junk")
        self.assertEqual(e.exception.kind, "state")

    def test_wrong_item_types_are_unsupported(self):
        self.api.post("/orders", {"id": 5, "amount": "lots"})
        columns = {"orders": {"id": "bigint", "amount": "double precision"}}
        with self.assertRaises(ConnectorError) as e:
            drain(open_reader(self.api.config(resources=["orders"], columns=columns)))
        self.assertEqual(e.exception.kind, "unsupported")
        self.assertIn("field `amount` is \"lots\"", e.exception.message)


if __name__ == "__main__":
    unittest.main()
