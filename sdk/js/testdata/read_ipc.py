"""Reads an Arrow IPC stream on stdin with pyarrow and prints what it holds as JSON, so
the SDK tests can check that streams written in JavaScript read back elsewhere."""

import json
import sys

import pyarrow as pa

reader = pa.ipc.open_stream(sys.stdin.buffer.read())
table = reader.read_all()
out = {
    "schema_metadata": {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()},
    "fields": [
        {
            "name": f.name,
            "type": str(f.type),
            "metadata": {k.decode(): v.decode() for k, v in (f.metadata or {}).items()},
        }
        for f in table.schema
    ],
    "rows": json.loads(json.dumps(table.to_pylist(), default=lambda v: v.hex() if isinstance(v, bytes) else str(v))),
}
print(json.dumps(out))
