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

import json

from . import _wit, host
from .errors import ConnectorError
from .types import Batch, Check

try:
    import wit_world.exports as _exports
    from wit_world.exports import source_connector as _sc
except ImportError:  # Natively, or in a destination build: nothing to export.
    _exports = None
    _sc = None

__all__ = ["Source", "Reader", "export_source"]


class Source:
    """Base class of a source connector; one instance serves every call."""

    #: A `config.Config`: `spec` and configuration parsing come from it when set.
    config = None

    def spec(self):
        """JSON Schema of the configuration (a dict or JSON text)."""
        if self.config is None:
            return {"type": "object"}
        return self.config.schema()

    def parse_config(self, text):
        """The parsed configuration handed to the other methods; raise
        ConnectorError("config") naming the field when it is invalid."""
        if self.config is not None:
            return self.config.parse(text)
        try:
            return json.loads(text)
        except ValueError as e:
            raise ConnectorError("config", "the configuration is not valid JSON: %s" % e) from None

    def check(self, cfg):
        """Checks beyond parsing the configuration (reachability, credentials,
        permissions): a list of `Check`. Raising ConnectorError fails one check named
        after the error kind."""
        return []

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

    # The calls the component makes; connector code does not need these.

    def _spec_text(self):
        spec = self.spec()
        return spec if isinstance(spec, str) else json.dumps(spec, indent=2)

    def _check(self, text):
        try:
            cfg = self.parse_config(text)
        except ConnectorError as e:
            return [Check.failed("config", e.message)]
        results = [Check.passed("config")]
        try:
            results.extend(self.check(cfg) or [])
        except ConnectorError as e:
            results.append(Check.failed(e.kind, e.message))
        return results


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
            try:
                return _source()._spec_text()
            except Exception as e:  # noqa: BLE001 - `spec` has no error channel; log, then trap
                host.error(_wit.unexpected(e, "spec").message)
                raise

        def check(self, config):
            try:
                return [_wit.check_result(c) for c in _source()._check(config)]
            except Exception as e:  # noqa: BLE001 - report the bug as a failing check
                return [_wit.check_result(Check.failed("check", _wit.unexpected(e, "check").message))]

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
