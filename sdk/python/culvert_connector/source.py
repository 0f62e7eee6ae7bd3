"""Source connectors: subclass `Source` and `Reader`, then export.

    class MySource(Source):
        config = Config(...)                       # spec and parsing come from it
        def discover(self, cfg): return [ITEMS.info()]
        def open(self, cfg, selection, resume): return MyReader(cfg, resume)

    class MyReader(Reader):
        def next(self, max_rows): ...              # a Batch, or None when idle

    SourceConnector = export_source(MySource)      # the name componentize-py looks for

Every method may raise `ConnectorError`; any other exception becomes an `internal`
error naming the place, instead of a crash without a message.
"""

from . import _wit, host
from .connector import Connector, export_check, export_spec
from .errors import ConnectorError
from .types import Batch

try:
    import wit_world.exports as _exports
    from wit_world.exports import source_connector as _sc
except ImportError:  # Natively, or in a destination build: nothing to export.
    _exports = None
    _sc = None

__all__ = ["Source", "Reader", "export_source"]


class Source(Connector):
    """Base class of a source connector; one instance serves every call."""

    def discover(self, cfg):
        """The tables the configuration can see: a list of `TableInfo`
        (`Table.info()` makes one)."""
        raise NotImplementedError("discover")

    def open(self, cfg, selection, resume):
        """A `Reader` for the selected tables (globs such as `public.*`; empty selects
        everything), resuming after position `resume` (bytes) or from the start (None)."""
        raise NotImplementedError("open")

    def resync(self, cfg, selection, tables):
        """Copy `tables` (list of `TableRef`; empty: every selected table) again; returns
        a summary for the operator."""
        raise ConnectorError("unsupported", "this connector cannot resync tables; reset the "
                                            "pipeline to copy everything again")


class Reader:
    """Base class of a reader: a stream of batches, snapshot first, then changes."""

    #: Seconds the component waits when `next` has nothing, so the agent does not spin
    #: (the contract: `next` answers none when nothing arrived within about a second).
    idle_seconds = 1.0

    def next(self, max_rows):
        """The next `Batch` with at most `max_rows` rows per table, or None when idle."""
        raise NotImplementedError("next")

    def ack(self, position):
        """Everything up to `position` is durable at the destination."""


_instance = None


def _source():
    if _instance is None:
        raise ConnectorError("internal", "no source is exported; call export_source(YourSource) "
                                         "in the app module")
    return _instance


if _sc is not None:

    class _ReaderExport(_sc.Reader):
        """The WIT `reader` resource, delegating to the connector's Reader."""

        @classmethod
        def open(cls, config, selection, resume):
            src = _source()

            def run():
                cfg = src.parse_config(config)
                reader = src.open(cfg, list(selection), None if resume is None else bytes(resume))
                if not isinstance(reader, Reader):
                    raise ConnectorError("internal", "Source.open must return a Reader, not %r"
                                         % (reader,))
                return reader

            this = cls()
            this._reader = _wit.guard("open", run)
            return this

        def next(self, max_rows):
            reader = self._reader

            def run():
                b = reader.next(max_rows)
                if b is None:
                    host.sleep(reader.idle_seconds)
                    return None
                if not isinstance(b, Batch):
                    raise ConnectorError("internal", "Reader.next must return a Batch or None, "
                                                     "not %r" % (b,))
                return _wit.batch(b)

            return _wit.guard("next", run)

        def ack(self, position):
            _wit.guard("ack", self._reader.ack, bytes(position))

    class _SourceExport(_exports.SourceConnector):
        """The WIT `source-connector` interface, delegating to the exported Source."""

        def spec(self):
            return export_spec(_source)

        def check(self, config):
            return export_check(_source, config)

        def discover(self, config):
            src = _source()
            return _wit.guard(
                "discover",
                lambda: [_wit.table_info(i) for i in src.discover(src.parse_config(config))])

        def resync(self, config, selection, tables):
            src = _source()
            return _wit.guard(
                "resync",
                lambda: str(src.resync(src.parse_config(config), list(selection),
                                       [_wit.table_ref_in(r) for r in tables])))


def export_source(source_class):
    """Make `source_class` (a `Source` subclass) this component's source. Call it once in
    the app module and bind the result to `SourceConnector`, the name componentize-py
    looks for. Natively it only records the class and returns None."""
    global _instance
    if not (isinstance(source_class, type) and issubclass(source_class, Source)):
        raise TypeError("export_source needs a Source subclass, not %r" % (source_class,))
    _instance = source_class()
    if _sc is None:
        return None
    _wit.install_module("source_connector", Reader=_ReaderExport)
    return _SourceExport
