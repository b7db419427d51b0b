"""Small Arrow values built from buffers, never from Python objects.

pyarrow turns a Python object into an Arrow value (`pa.array`, `pa.scalar`, a plain `1.0` or
`"NaN"` handed to a compute function) only after asking whether it is a pandas object, and the
first time it asks it imports pandas: ~0.2 s, more than the rest of a first export's set-up. So
the export paths build the few constants and arrays they need here, from bytes.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

__all__ = ["float_scalar", "int_scalar", "repeated_string", "string_array", "string_scalar"]


def string_array(strings: Sequence[str]) -> Any:
    """`pa.array(strings, pa.string())`."""
    import pyarrow as pa

    data = [s.encode() for s in strings]
    offsets = array("i", [0, *accumulate(map(len, data))])
    return pa.StringArray.from_buffers(
        len(data), pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(data))
    )


def repeated_string(text: str, n: int) -> Any:
    """`pa.repeat(pa.scalar(text), n)`: one string `n` times."""
    import pyarrow as pa

    data = text.encode()
    step = len(data)
    offsets = array("i", range(0, step * (n + 1), step)) if step else array("i", [0]) * (n + 1)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data * n))


def string_scalar(text: str) -> Any:
    return string_array([text])[0]


def float_scalar(value: float) -> Any:
    import pyarrow as pa

    return pa.Array.from_buffers(pa.float64(), 1, [None, pa.py_buffer(struct.pack("=d", value))])[0]


def int_scalar(value: int) -> Any:
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int64(), 1, [None, pa.py_buffer(struct.pack("=q", value))])[0]
