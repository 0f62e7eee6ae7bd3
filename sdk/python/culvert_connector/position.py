"""Positions: opaque bytes the agent compares byte-wise.

A position must grow with every data batch, so big-endian unsigned integers are the
natural encoding: their byte order is their numeric order.
"""

import struct

from .errors import ConnectorError

__all__ = ["encode_u64", "decode_u64", "encode_u64s", "decode_u64s", "split_u64"]

_U64 = struct.Struct(">Q")


def encode_u64(n):
    """`n` as 8 big-endian bytes."""
    if not 0 <= n < 1 << 64:
        raise ConnectorError("internal", "position %r does not fit an unsigned 64-bit integer" % (n,))
    return _U64.pack(n)


def decode_u64(position):
    """The integer of an 8-byte big-endian position; a state error for anything else."""
    if len(position) != 8:
        raise ConnectorError(
            "state",
            "the stored position %s is not one this connector wrote (expected 8 bytes, got %d); "
            "reset the pipeline's position or restore the connector version that wrote it"
            % (bytes(position).hex() or "(empty)", len(position)),
        )
    return _U64.unpack(bytes(position))[0]


def encode_u64s(*numbers):
    """Several integers, each 8 big-endian bytes: ordered like the tuple of numbers."""
    return b"".join(encode_u64(n) for n in numbers)


def decode_u64s(position, count):
    """`count` integers from the front of a position written by `encode_u64s`."""
    if len(position) != 8 * count:
        raise ConnectorError(
            "state",
            "the stored position %s is not one this connector wrote (expected %d bytes, got %d); "
            "reset the pipeline's position or restore the connector version that wrote it"
            % (bytes(position).hex() or "(empty)", 8 * count, len(position)),
        )
    return tuple(struct.unpack(">%dQ" % count, bytes(position)))


def split_u64(position):
    """(leading integer, remaining bytes): for positions that are a counter plus a payload.

    A counter in front keeps positions ordered whatever the payload holds (for example an
    API's opaque page cursor).
    """
    if len(position) < 8:
        raise ConnectorError(
            "state",
            "the stored position %s is too short to be one this connector wrote; reset the "
            "pipeline's position" % (bytes(position).hex() or "(empty)"),
        )
    return _U64.unpack(bytes(position[:8]))[0], bytes(position[8:])
