"""How cluster values travel: cloudpickle protocol 5 with out-of-band buffers, laid out so that a
value in shared memory is read back without copying its buffers.

Layout of a serialized value (little-endian):
    magic b"TTH1" | u32 buffer count n | u64 pickle length | n x (u64 offset, u64 length)
    | pickle bytes | each buffer at a 64-byte aligned offset
ObjectRefs inside a value are pickled by id and reported in `contained`, so the node keeps them
alive as long as the value."""
from __future__ import annotations

import pickle
import struct
import threading

import cloudpickle

_HEADER = struct.Struct("<4sIQ")
_ENTRY = struct.Struct("<QQ")
_MAGIC = b"TTH1"
_ALIGN = 64

_context = threading.local()  # the ObjectRefs met while pickling one value, and top-level deps


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class Serialized:
    """One value ready to travel: `size` bytes once laid out; `contained` the ObjectRef ids inside."""

    __slots__ = ("pickled", "buffers", "contained", "refs", "size", "_offsets")

    def __init__(self, pickled: bytes, buffers: list, refs: list):
        self.pickled = pickled
        self.buffers = [b.raw() for b in buffers]
        self.refs = refs  # the ObjectRefs met: whoever sends this keeps them until the node has it
        self.contained = [ref.binary() for ref in refs]
        offset = _HEADER.size + _ENTRY.size * len(self.buffers) + len(pickled)
        self._offsets = []
        for buffer in self.buffers:
            offset = _aligned(offset)
            self._offsets.append(offset)
            offset += buffer.nbytes
        self.size = offset

    def write_into(self, target: memoryview) -> None:
        _HEADER.pack_into(target, 0, _MAGIC, len(self.buffers), len(self.pickled))
        position = _HEADER.size
        for offset, buffer in zip(self._offsets, self.buffers):
            _ENTRY.pack_into(target, position, offset, buffer.nbytes)
            position += _ENTRY.size
        target[position:position + len(self.pickled)] = self.pickled
        for offset, buffer in zip(self._offsets, self.buffers):
            target[offset:offset + buffer.nbytes] = buffer

    def to_bytes(self) -> bytes:
        out = bytearray(self.size)
        self.write_into(memoryview(out))
        return bytes(out)


def serialize(value) -> Serialized:
    """Pickles `value` (functions and closures included, through cloudpickle)."""
    previous = getattr(_context, "contained", None)
    _context.contained = []
    try:
        buffers: list = []
        pickled = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        return Serialized(pickled, buffers, _context.contained)
    finally:
        _context.contained = previous


def note_contained(ref) -> None:
    """Called by ObjectRef.__reduce__: the value being serialized refers to this object."""
    contained = getattr(_context, "contained", None)
    if contained is not None:
        contained.append(ref)


def deserialize(data) -> object:
    """Rebuilds a value from its layout in `data` (bytes, or a read-only memoryview of shared memory,
    whose buffers then back the value's arrays without a copy)."""
    view = memoryview(data)
    magic, count, pickle_length = _HEADER.unpack_from(view, 0)
    if magic != _MAGIC:
        raise ValueError("not a tether cluster value (bad magic)")
    position = _HEADER.size
    buffers = []
    for _ in range(count):
        offset, length = _ENTRY.unpack_from(view, position)
        position += _ENTRY.size
        if offset + length > len(view):
            raise ValueError("a buffer of this value lies outside its data")
        buffers.append(view[offset:offset + length])
    return pickle.loads(view[position:position + pickle_length], buffers=buffers)
