"""`ConnectorError`: an error with a kind and a message for the operator."""

__all__ = [
    "KINDS",
    "ConnectorError",
    "config_error",
    "connection_error",
    "auth_error",
    "permission_error",
    "unsupported_error",
    "state_error",
    "internal_error",
]

#: Error kinds of the WIT `error-kind` enum.
KINDS = ("config", "connection", "auth", "permission", "unsupported", "state", "internal")


class ConnectorError(Exception):
    """Raise from any connector method: the agent receives `kind` and `message`.

    `kind` decides what the agent does: `connection` is retried, the others stop the
    pipeline and show `message`, so say what is wrong and how to fix it.
    """

    def __init__(self, kind, message):
        if kind not in KINDS:
            raise ValueError("unknown error kind %r; use one of %s" % (kind, ", ".join(KINDS)))
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self):
        return "%s error: %s" % (self.kind, self.message)

    def __repr__(self):
        return "ConnectorError(%r, %r)" % (self.kind, self.message)


def config_error(message):
    """The configuration is invalid; name the field."""
    return ConnectorError("config", message)


def connection_error(message):
    """The endpoint cannot be reached or the connection broke; the agent retries."""
    return ConnectorError("connection", message)


def auth_error(message):
    """Credentials were refused."""
    return ConnectorError("auth", message)


def permission_error(message):
    """The credentials work but lack a privilege; name it."""
    return ConnectorError("permission", message)


def unsupported_error(message):
    """The data or schema uses something this connector cannot carry exactly."""
    return ConnectorError("unsupported", message)


def state_error(message):
    """The replication state is gone or inconsistent."""
    return ConnectorError("state", message)


def internal_error(message):
    """A bug or an unexpected answer from the remote system."""
    return ConnectorError("internal", message)
