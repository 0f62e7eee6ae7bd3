"""Native unit tests of `{{name}}`: `python3 -m unittest` in the project directory.

They run the connector's classes directly against an in-memory fake of Blob Storage,
without building the component; `culvert connector test` then checks the built
component in the sandbox.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "culvert-sdk"))

import app  # noqa: E402
from culvert_connector import Batch, TableRef, TableRows, host  # noqa: E402

CONFIG = '{"container_url": "http://127.0.0.1:10000/acct/c", "sas": "?sig=x", "prefix": "p/"}'
BASE = "http://127.0.0.1:10000/acct/c/"


def fake_storage():
    """An in-memory container answering like Blob Storage; returns its blobs."""
    blobs = {}

    def handler(method, url, headers, body):
        path, _, query = url.partition("?")
        assert query == "sig=x", query
        name = path[len(BASE):]
        if method == "PUT":
            blobs[name] = body
            return host.Response(201, [], b"", method, url)
        if name in blobs:
            return host.Response(200, [], blobs[name], method, url)
        return host.Response(404, [("x-ms-error-code", "BlobNotFound")], b"", method, url)

    host.set_http_handler(handler)
    return blobs


def batch(position):
    rows = TableRows(TableRef("demo", "items"), position == 1, 3, b"")
    return Batch.snapshot(bytes([0, position]), [rows])


def writer(config=CONFIG):
    destination = app.{{name_pascal}}()
    return destination.open(destination.parse_config(config), "pipe")


class DestinationTest(unittest.TestCase):
    def tearDown(self):
        host.set_http_handler(None)

    def test_writes_blobs_and_commits(self):
        blobs = fake_storage()
        w = writer()
        self.assertIsNone(w.committed())
        self.assertEqual(w.apply(batch(1)), b"\x00\x01")
        self.assertEqual(w.apply(batch(2)), b"\x00\x02")
        self.assertEqual(
            blobs["p/pipe/0001.ndjson"],
            b'{"table":"demo.items","kind":"snapshot","rows":3,"first_of_table":true}\n')
        self.assertEqual(blobs["p/pipe/_committed"], b"0002")
        self.assertEqual(writer().committed(), b"\x00\x02")

    def test_replays_are_no_ops(self):
        blobs = fake_storage()
        w = writer()
        w.apply(batch(2))
        del blobs["p/pipe/0002.ndjson"]
        self.assertEqual(w.apply(batch(1)), b"\x00\x01")
        self.assertEqual(w.apply(batch(2)), b"\x00\x02")
        self.assertEqual(list(blobs), ["p/pipe/_committed"])

    def test_discard_writes_nothing(self):
        blobs = fake_storage()
        w = writer('{"container_url": "http://127.0.0.1:1/a/c", "sas": "s", "discard": true}')
        self.assertIsNone(w.committed())
        self.assertEqual(w.apply(batch(1)), b"\x00\x01")
        self.assertEqual(w.committed(), b"\x00\x01")
        self.assertEqual(blobs, {})

    def test_config_errors_name_the_field(self):
        destination = app.{{name_pascal}}()
        results = destination._check('{"container_url": "ftp://x/c", "sas": "s"}')
        self.assertFalse(results[0].ok)
        self.assertIn("`container_url`", results[0].message)
        results = destination._check('{"container_url": "http://x/c"}')
        self.assertIn("`sas`", results[0].message)
        results = destination._check('{"container_url": "http://x:1", "sas": "s"}')
        self.assertIn("must name a container", results[0].message)

    def test_check_probes_the_container(self):
        fake_storage()
        results = app.{{name_pascal}}()._check(CONFIG)
        self.assertTrue(all(r.ok for r in results), results)


if __name__ == "__main__":
    unittest.main()
