"""Destination connectors: subclass `Destination` and `Writer`, then export.

    class MyDestination(Destination):
        config = Config(...)
        def open(self, cfg, pipeline): return MyWriter(cfg, pipeline)

    class MyWriter(Writer):
        def committed(self): ...                   # bytes or None
        def apply(self, batch): ...                # make it durable, return batch.position

    DestinationConnector = export_destination(MyDestination)

Every method may raise `ConnectorError`; any other exception becomes an `internal`
error naming the place, instead of a crash without a message.
"""

import json

from . import _wit, host
from .errors import ConnectorError
from .types import Check

try:
    import wit_world.exports as _exports
    from wit_world.exports import destination_connector as _dc
except ImportError:  # Natively, or in a source build: nothing to export.
    _exports = None
    _dc = None

__all__ = ["Destination", "Writer", "export_destination"]


class Destination:
    """Base class of a destination connector; one instance serves every call."""

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
        """Checks beyond parsing the configuration: a list of `Check`. Raising
        ConnectorError fails one check named after the error kind."""
        return []

    def open(self, cfg, pipeline):
        """A `Writer` for `pipeline` (the name scopes the stored position)."""
        raise NotImplementedError("open")

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


class Writer:
    """Base class of a writer: applies batches, each atomically with its position."""

    def committed(self):
        """The last position committed for this pipeline (bytes), or None."""
        raise NotImplementedError("committed")

    def apply(self, batch):
        """Make `batch` (a `Batch`) durable together with its position and return the
        position. A batch at or before the committed position must be a no-op."""
        raise NotImplementedError("apply")


_instance = None


def _destination():
    if _instance is None:
        raise ConnectorError("internal", "no destination is exported; call "
                                         "export_destination(YourDestination) in the app module")
    return _instance


if _dc is not None:

    class _WriterExport(_dc.Writer):
        """The WIT `writer` resource, delegating to the connector's Writer."""

        @classmethod
        def open(cls, config, pipeline):
            dst = _destination()

            def run():
                writer = dst.open(dst.parse_config(config), pipeline)
                if not isinstance(writer, Writer):
                    raise ConnectorError("internal", "Destination.open must return a Writer, "
                                                     "not %r" % (writer,))
                return writer

            this = cls()
            this._writer = _wit.guard("open", run)
            return this

        def committed(self):
            def run():
                pos = self._writer.committed()
                return None if pos is None else bytes(pos)

            return _wit.guard("committed", run)

        def apply(self, batch):
            def run():
                pos = self._writer.apply(_wit.batch_in(batch))
                if pos is None:
                    raise ConnectorError("internal", "Writer.apply must return the position it "
                                                     "made durable (bytes), not None")
                return bytes(pos)

            return _wit.guard("apply", run)

    class _DestinationExport(_exports.DestinationConnector):
        """The WIT `destination-connector` interface, delegating to the exported Destination."""

        def spec(self):
            try:
                return _destination()._spec_text()
            except Exception as e:  # noqa: BLE001 - `spec` has no error channel; log, then trap
                host.error(_wit.unexpected(e, "spec").message)
                raise

        def check(self, config):
            try:
                return [_wit.check_result(c) for c in _destination()._check(config)]
            except Exception as e:  # noqa: BLE001 - report the bug as a failing check
                return [_wit.check_result(Check.failed("check", _wit.unexpected(e, "check").message))]


def export_destination(destination_class):
    """Make `destination_class` (a `Destination` subclass) this component's destination.
    Call it once in the app module and bind the result to `DestinationConnector`, the
    name componentize-py looks for. Natively it only records the class and returns None."""
    global _instance
    if not (isinstance(destination_class, type) and issubclass(destination_class, Destination)):
        raise TypeError("export_destination needs a Destination subclass, not %r"
                        % (destination_class,))
    _instance = destination_class()
    if _dc is None:
        return None
    _wit.install_module("destination_connector", Writer=_WriterExport)
    return _DestinationExport
