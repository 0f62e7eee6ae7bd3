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

from . import _wit
from .connector import Connector, export_check, export_spec
from .errors import ConnectorError

try:
    import wit_world.exports as _exports
    from wit_world.exports import destination_connector as _dc
except ImportError:  # Natively, or in a source build: nothing to export.
    _exports = None
    _dc = None

__all__ = ["Destination", "Writer", "export_destination"]


class Destination(Connector):
    """Base class of a destination connector; one instance serves every call."""

    def open(self, cfg, pipeline):
        """A `Writer` for `pipeline` (the name scopes the stored position)."""
        raise NotImplementedError("open")


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
            return export_spec(_destination)

        def check(self, config):
            return export_check(_destination, config)


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
