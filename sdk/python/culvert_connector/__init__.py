"""Culvert connector SDK for Python (componentize-py).

Write a source by subclassing `Source` and `Reader`, a destination by subclassing
`Destination` and `Writer`, then bind the export in your app module:

    SourceConnector = export_source(MySource)
    DestinationConnector = export_destination(MyDestination)

Everything imported here is imported when the component is built: a component has no
filesystem, so a module first imported while it runs cannot be found. Import what your
connector needs at the top of its modules, never inside functions.
"""

from . import arrow, host, position
from .config import Bool, Config, Float, Int, Json, Str, StrList, Values
from .destination import Destination, Writer, export_destination
from .errors import (
    KINDS,
    ConnectorError,
    auth_error,
    config_error,
    connection_error,
    internal_error,
    permission_error,
    state_error,
    unsupported_error,
)
from .host import Response, http, http_json
from .position import decode_u64, decode_u64s, encode_u64, encode_u64s, split_u64
from .rows import Column, Table, TableRowsBuilder
from .source import Reader, Source, export_source
from .types import CHANGES, HEARTBEAT, SNAPSHOT, Batch, Check, ColumnInfo, TableInfo, TableRef, TableRows

__version__ = "0.1.0"

__all__ = [
    "arrow",
    "host",
    "position",
    "Bool",
    "Config",
    "Float",
    "Int",
    "Json",
    "Str",
    "StrList",
    "Values",
    "Destination",
    "Writer",
    "export_destination",
    "KINDS",
    "ConnectorError",
    "auth_error",
    "config_error",
    "connection_error",
    "internal_error",
    "permission_error",
    "state_error",
    "unsupported_error",
    "Response",
    "http",
    "http_json",
    "decode_u64",
    "decode_u64s",
    "encode_u64",
    "encode_u64s",
    "split_u64",
    "Column",
    "Table",
    "TableRowsBuilder",
    "Reader",
    "Source",
    "export_source",
    "CHANGES",
    "HEARTBEAT",
    "SNAPSHOT",
    "Batch",
    "Check",
    "ColumnInfo",
    "TableInfo",
    "TableRef",
    "TableRows",
]
