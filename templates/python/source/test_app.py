"""Native unit tests of `{{name}}`: `python3 -m unittest` in the project directory.

They run the connector's classes directly with plain Python, without building the
component; `culvert connector test` then checks the built component in the sandbox.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "culvert-sdk"))

import app  # noqa: E402
from culvert_connector import ConnectorError  # noqa: E402


def read_all(config, resume=None, max_rows=400):
    source = app.{{name_pascal}}()
    reader = source.open(source.parse_config(config), [], resume)
    batches = []
    while True:
        batch = reader.next(max_rows)
        if batch is None:
            return batches
        batches.append(batch)


class SourceTest(unittest.TestCase):
    def test_snapshot_then_idle(self):
        batches = read_all('{"rows": 1000, "batch_rows": 300}')
        self.assertEqual([b.tables[0].row_count for b in batches], [300, 300, 300, 100])
        self.assertTrue(batches[0].tables[0].first_of_table)
        self.assertFalse(batches[1].tables[0].first_of_table)
        positions = [b.position for b in batches]
        self.assertEqual(positions, sorted(set(positions)))

    def test_max_rows_caps_batches(self):
        batches = read_all('{"rows": 10}', max_rows=4)
        self.assertEqual([b.tables[0].row_count for b in batches], [4, 4, 2])

    def test_resume_continues_exactly(self):
        config = '{"rows": 10, "batch_rows": 3}'
        everything = read_all(config)
        rest = read_all(config, resume=everything[1].position)
        self.assertEqual([b.position for b in rest], [b.position for b in everything[2:]])
        self.assertEqual([b.tables[0].ipc for b in rest], [b.tables[0].ipc for b in everything[2:]])

    def test_resume_past_the_end_is_a_state_error(self):
        with self.assertRaises(ConnectorError) as e:
            read_all('{"rows": 2}', resume=(5).to_bytes(8, "big"))
        self.assertEqual(e.exception.kind, "state")

    def test_bad_config_fails_check(self):
        source = app.{{name_pascal}}()
        results = source._check('{"rows": 5, "batch_rows": 0}')
        self.assertFalse(results[0].ok)
        self.assertIn("`batch_rows`", results[0].message)
        self.assertFalse(source._check('{"rows": "many"}')[0].ok)
        self.assertTrue(all(c.ok for c in source._check('{"rows": 5}')))


if __name__ == "__main__":
    unittest.main()
