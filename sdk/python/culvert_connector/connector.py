"""What sources and destinations share: the configuration's spec and parsing, `check`,
and the WIT `spec`/`check` exports built on them."""

import json

from . import _wit, host
from .errors import ConnectorError
from .types import Check

__all__ = ["Connector"]


class Connector:
    """Base of `Source` and `Destination`; one instance serves every call."""

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


def export_spec(instance):
    """The WIT `spec` export of the connector `instance()` returns."""
    try:
        return instance()._spec_text()
    except Exception as e:  # noqa: BLE001 - `spec` has no error channel; log, then trap
        host.error(_wit.unexpected(e, "spec").message)
        raise


def export_check(instance, config):
    """The WIT `check` export of the connector `instance()` returns."""
    try:
        return [_wit.check_result(c) for c in instance()._check(config)]
    except Exception as e:  # noqa: BLE001 - report the bug as a failing check
        return [_wit.check_result(Check.failed("check", _wit.unexpected(e, "check").message))]
