"""JSON lines and CSV built from Arrow columns, a chunk at a time, with the bytes of the rows.

Formatting each row in Python costs ~2 us a point (five fields through an f-string), which held
the text exports near 0.4M points/s. Here each column is turned into strings by one Arrow cast and
the lines are joined by one element-wise kernel, in C; the result is byte for byte what the
row-by-row writer in `mcp_server.core.export` makes (that one stays for servers without pyarrow).

The one place the two disagree is a double's text. Python writes `repr(x)` (the shortest digits
that read back as `x`, positional from 1e-4 up to 1e16, else `1.5e-07` / `1e+16`, and `1.0` for an
integer); Arrow's cast has the same shortest digits but is positional from 1e-6 up to 1e10 and
writes `1` and `1.5e-7`. So the cast is kept where both are positional (a `.0` added to an
integer), its exponent padded to two digits where both are scientific, and the few values in
between go through `repr`. `vectorised_text_exact()` checks this against `repr` once, on values
at every boundary: a pyarrow that formats otherwise gets the row-by-row writer instead.
"""

from __future__ import annotations

import functools
import logging
import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from storage import float_scalar, string_array, string_scalar

__all__ = ["arrow_text_encoder", "vectorised_text_exact"]

log = logging.getLogger(__name__)

TextFormat = Literal["jsonl", "csv"]

# Python writes a double positionally for magnitudes in [1e-4, 1e16), Arrow in [1e-6, 1e10).
_ARROW_LOW, _PYTHON_LOW, _ARROW_HIGH, _PYTHON_HIGH = 1e-6, 1e-4, 1e10, 1e16
_JSON_TOKENS = ("NaN", "Infinity", "-Infinity")
_CSV_TOKENS = ("nan", "inf", "-inf")


@dataclass(frozen=True)
class _Constants:
    """The Arrow scalars the encoders hand to compute functions (built from bytes: a Python
    value there makes pyarrow import pandas, see `storage.arrow_values`)."""

    texts: dict[str, Any]
    numbers: dict[float, Any]


@functools.cache
def _constants() -> _Constants:
    json = ['{"name":"', '","step":', ',"epoch":', ',"value":', ',"wall_time":', "}\n", "", "null"]
    csv = [",", "\r\n", "", ".0"]
    texts = {t: string_scalar(t) for t in {*json, *csv, *_JSON_TOKENS, *_CSV_TOKENS}}
    bounds = (0.0, 1000.0, _ARROW_LOW, _PYTHON_LOW, _ARROW_HIGH, _PYTHON_HIGH, math.nan)
    return _Constants(texts, {b: float_scalar(b) for b in bounds})


def arrow_text_encoder(fmt: TextFormat) -> Callable[[Any], bytes]:
    """A function from an export `pyarrow.RecordBatch` (columns name, step, epoch, value,
    wall_time) to its lines as JSON lines or CSV rows (no header), as the row writer makes them."""
    return _jsonl if fmt == "jsonl" else _csv


def _jsonl(batch: Any) -> bytes:
    import pyarrow.compute as pc

    k = _constants().texts
    name, step, epoch, value, wall = batch.columns
    lines = pc.binary_join_element_wise(
        k['{"name":"'],
        name,  # validated on the way in (letters, digits, _ . / -): nothing to escape
        k['","step":'],
        _ints(step, k["null"]),
        k[',"epoch":'],
        _ints(epoch, k["null"]),
        k[',"value":'],
        _doubles(value, _JSON_TOKENS),
        k[',"wall_time":'],
        _doubles(wall, _JSON_TOKENS),
        k["}\n"],
        k[""],
    )
    return _joined_bytes(lines)


def _csv(batch: Any) -> bytes:
    import pyarrow.compute as pc

    k = _constants().texts
    name, step, epoch, value, wall = batch.columns
    rows = pc.binary_join_element_wise(
        name,  # never needs quoting (see _jsonl)
        _ints(step, k[""]),
        _ints(epoch, k[""]),
        _doubles(value, _CSV_TOKENS),
        pc.binary_join_element_wise(_doubles(wall, _CSV_TOKENS), k["\r\n"], k[""]),
        k[","],
    )
    return _joined_bytes(rows)


def _ints(column: Any, null: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(column, pa.string())
    return pc.fill_null(text, null) if column.null_count else text


def _doubles(x: Any, tokens: tuple[str, str, str]) -> Any:
    """`repr` of every double of `x` (a float64 array without nulls), NaN and the infinities
    written as `tokens`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    k, n = _constants().texts, _constants().numbers
    text = pc.cast(x, pa.string())
    size = pc.abs(x)
    finite = pc.is_finite(x)
    # Positional in both: Arrow leaves an integer's '.0' off.
    integral = pc.and_(pc.equal(pc.floor(x), x), pc.less(size, n[_ARROW_HIGH]))
    text = _replace(
        text, integral, lambda m: pc.binary_join_element_wise(pc.filter(text, m), k[".0"], k[""])
    )
    # Scientific in both (non-zero, below 1e-6 or from 1e16): Arrow writes e-7 where Python e-07.
    scientific = pc.and_(
        pc.or_(pc.less(size, n[_ARROW_LOW]), pc.greater_equal(size, n[_PYTHON_HIGH])),
        pc.and_(pc.not_equal(size, n[0.0]), finite),
    )
    text = _replace(
        text,
        scientific,
        lambda m: pc.replace_substring_regex(pc.filter(text, m), r"e([-+])(\d)$", r"e\10\2"),
    )
    # Positional in Python only (Arrow writes 0.00001 and 1e+12): `repr` itself, for these few.
    between = pc.or_(
        pc.and_(pc.greater_equal(size, n[_ARROW_LOW]), pc.less(size, n[_PYTHON_LOW])),
        pc.and_(pc.greater_equal(size, n[_ARROW_HIGH]), pc.less(size, n[_PYTHON_HIGH])),
    )
    text = _replace(
        text, between, lambda m: string_array([repr(v) for v in pc.filter(x, m).to_pylist()])
    )
    if not pc.all(finite).as_py():
        nan, inf, minus_inf = (k[t] for t in tokens)
        sign = pc.if_else(pc.greater(x, n[0.0]), inf, minus_inf)
        text = pc.if_else(pc.is_nan(x), nan, pc.if_else(pc.is_inf(x), sign, text))
    return text


def _replace(text: Any, mask: Any, strings: Callable[[Any], Any]) -> Any:
    """`text` with the strings where `mask` holds replaced by `strings(mask)`, in order."""
    import pyarrow.compute as pc

    if not pc.any(mask).as_py():
        return text
    return pc.replace_with_mask(text, mask, strings(mask))


def _joined_bytes(lines: Any) -> bytes:
    """The strings of `lines` one after another: its data buffer, between the first offset
    and the last."""
    import pyarrow as pa

    n = len(lines)
    if n == 0:
        return b""
    offsets = pa.Array.from_buffers(
        pa.int32(), n + 1, [None, lines.buffers()[1]], offset=lines.offset
    )
    start, end = offsets[0].as_py(), offsets[n].as_py()
    data: bytes = lines.buffers()[2][start:end].to_pybytes()
    return data


@functools.cache
def vectorised_text_exact() -> bool:
    """Whether this pyarrow's doubles come out of `_doubles` as `repr` writes them, on values at
    both sides of every power of ten and of each bound above (checked once a process)."""
    import pyarrow as pa

    probes = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3]
    for exponent in range(-324, 309):
        for mantissa in (1.0, 1.5, 9.999999999999998):
            edge = mantissa * 10.0**exponent  # subnormal, or 0.0, below 1e-308
            if edge == 0.0 or math.isinf(edge):
                continue
            probes += [edge, math.nextafter(edge, 0.0), math.nextafter(edge, math.inf)]
    probes += [-p for p in probes] + [float(n) for n in range(-1000, 1000)]
    probes += [1764650000.123, 1764650000.0, 1764650000.1, 1234567890123.5]
    doubles = pa.Array.from_buffers(
        pa.float64(), len(probes), [None, pa.py_buffer(array("d", probes))]
    )
    got = _doubles(doubles, _CSV_TOKENS).to_pylist()
    exact: bool = got == [repr(p) for p in probes]
    if not exact:
        log.warning(
            "pyarrow %s formats doubles otherwise: text exports go row by row", pa.__version__
        )
    return exact
