"""What the agent offers a connector: logs, metrics, name resolution and HTTP.

Inside a component these call the WIT `host` imports. Outside one (native unit tests,
`python -m unittest`), logs go to stderr, metrics to an in-memory dict, and `http` uses
`urllib` directly (or a handler set with `set_http_handler`), so connector code can be
tested without building it.
"""

import json
import sys
import time

from .errors import ConnectorError

try:
    from wit_world.imports import host as _wit_host
    from componentize_py_types import Err as _Err
except ImportError:  # Not inside a component: the native stand-ins below are used.
    _wit_host = None
    _Err = None

if _wit_host is None:
    # The component has no filesystem to import modules from at run time, so imports
    # stay at module level; this block only runs natively.
    import urllib.error
    import urllib.request

__all__ = [
    "IN_COMPONENT",
    "log",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "counter_add",
    "gauge_set",
    "resolve",
    "Response",
    "http",
    "http_json",
    "set_http_handler",
    "native_metrics",
    "sleep",
]

#: Whether this code runs inside a component (True) or natively (False).
IN_COMPONENT = _wit_host is not None

_LEVELS = ("trace", "debug", "info", "warn", "error")

#: Natively: counters and gauges written so far (name -> value), for tests to inspect.
native_metrics = {}

_http_handler = None


def log(level, message):
    """A log line attributed to this connector by the agent; `level` one of
    trace, debug, info, warn, error."""
    if level not in _LEVELS:
        raise ValueError("log level must be one of %s, not %r" % (", ".join(_LEVELS), level))
    if IN_COMPONENT:
        _wit_host.log(_wit_host.Level[level.upper()], str(message))
    else:
        sys.stderr.write("[%s] %s\n" % (level, message))


def trace(message):
    """Log at trace level."""
    log("trace", message)


def debug(message):
    """Log at debug level."""
    log("debug", message)


def info(message):
    """Log at info level."""
    log("info", message)


def warn(message):
    """Log at warn level."""
    log("warn", message)


def error(message):
    """Log at error level."""
    log("error", message)


def counter_add(name, value=1):
    """Add to a counter metric owned by this connector instance."""
    if IN_COMPONENT:
        _wit_host.counter_add(name, int(value))
    else:
        native_metrics[name] = native_metrics.get(name, 0) + int(value)


def gauge_set(name, value):
    """Set a gauge metric owned by this connector instance."""
    if IN_COMPONENT:
        _wit_host.gauge_set(name, float(value))
    else:
        native_metrics[name] = float(value)


def resolve(name):
    """IP addresses of a host name from the configuration (refused outside the egress
    allow-list). Raises ConnectorError("connection")."""
    if not IN_COMPONENT:
        import socket  # noqa: PLC0415 - native only

        return sorted({ai[4][0] for ai in socket.getaddrinfo(name, None)})
    try:
        return list(_wit_host.resolve(name))
    except _Err as e:
        raise ConnectorError("connection", "cannot resolve `%s`: %s" % (name, e.value)) from None


def sleep(seconds):
    """Wait without using CPU (for example between polls of an idle source)."""
    if seconds > 0:
        time.sleep(seconds)


def _redact(url):
    # Query strings often carry credentials (SAS tokens, API keys): never show them.
    return url.split("?", 1)[0].split("#", 1)[0]


def _snippet(text, limit=300):
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


class Response:
    """An HTTP response: `status`, `headers` (list of pairs), `body` (bytes)."""

    __slots__ = ("status", "headers", "body", "method", "url")

    def __init__(self, status, headers, body, method="", url=""):
        self.status = status
        self.headers = list(headers)
        self.body = bytes(body)
        self.method = method
        self.url = url

    def header(self, name):
        """The first value of header `name` (case-insensitive), or None."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def ok(self):
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    @property
    def text(self):
        """The body as text (UTF-8, invalid bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The body parsed as JSON; ConnectorError("internal") if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ConnectorError(
                "internal", "%s %s answered HTTP %d with a body that is not JSON (%s): %s"
                % (self.method, _redact(self.url), self.status, e, _snippet(self.text))) from None

    def raise_for_status(self, what=None):
        """Return self when 2xx; otherwise raise a ConnectorError whose kind follows the
        status: 401 auth, 403 permission, 408/429/5xx connection (retried by the agent),
        anything else internal. `what` names the request in the message."""
        if self.ok:
            return self
        s = self.status
        if s == 401:
            kind, hint = "auth", "; check the credentials in the configuration"
        elif s == 403:
            kind, hint = "permission", "; the credentials lack a permission for this request"
        elif s in (408, 429) or 500 <= s <= 599:
            kind, hint = "connection", "; the agent retries"
        elif s == 404:
            kind, hint = "config", "; check the URL in the configuration"
        else:
            kind, hint = "internal", ""
        raise ConnectorError(kind, "%s answered HTTP %d: %s%s" % (
            what or "%s %s" % (self.method, _redact(self.url)), s, _snippet(self.text) or "(no body)",
            hint))

    def __repr__(self):
        return "Response(%d, %d bytes)" % (self.status, len(self.body))


def set_http_handler(handler):
    """Natively: answer `http` calls with `handler(method, url, headers, body) -> Response`
    instead of the network (None restores urllib). Has no effect inside a component."""
    global _http_handler
    _http_handler = handler


def http(method, url, headers=None, body=b""):
    """Send an HTTP request through the agent (only to endpoints in the egress
    allow-list). HTTP error statuses are returned as responses; a request that could not
    be made raises ConnectorError("connection")."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = [(str(k), str(v)) for k, v in (headers or [])]
    method = method.upper()
    if IN_COMPONENT:
        req = _wit_host.HttpRequest(method=method, url=url, headers=headers, body=bytes(body))
        try:
            resp = _wit_host.http_send(req)
        except _Err as e:
            raise ConnectorError("connection", "%s %s failed: %s" % (method, _redact(url), e.value)) from None
        return Response(resp.status, resp.headers, resp.body, method, url)
    if _http_handler is not None:
        return _http_handler(method, url, headers, bytes(body))
    return _urllib_send(method, url, headers, bytes(body))


def http_json(method, url, value=None, headers=None):
    """`http` with a JSON body (when `value` is not None) and `Accept: application/json`."""
    headers = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    headers.append(("accept", "application/json"))
    body = b""
    if value is not None:
        headers.append(("content-type", "application/json"))
        body = json.dumps(value).encode("utf-8")
    return http(method, url, headers, body)


def _urllib_send(method, url, headers, body):
    req = urllib.request.Request(url, data=body if body or method in ("POST", "PUT", "PATCH") else None,
                                 method=method)
    for k, v in headers:
        req.add_header(k, v)

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=60) as r:
            return Response(r.status, list(r.headers.items()), r.read(), method, url)
    except urllib.error.HTTPError as e:
        return Response(e.code, list(e.headers.items()), e.read(), method, url)
    except (urllib.error.URLError, OSError) as e:
        raise ConnectorError("connection", "%s %s failed: %s" % (method, _redact(url), e)) from None
