"""Arrow values built from bytes equal the ones pyarrow builds from Python objects."""

from __future__ import annotations

import math

import pytest

from storage import float_scalar, int_scalar, repeated_string, string_array, string_scalar

pa = pytest.importorskip("pyarrow")


def test_arrays_and_scalars_from_bytes_equal_pyarrows_own() -> None:
    strings = ["a", "", "é/ü", "x" * 300]
    assert string_array(strings).equals(pa.array(strings, pa.string()))
    assert string_array([]).equals(pa.array([], pa.string()))
    assert repeated_string("val_loss", 3).equals(pa.array(["val_loss"] * 3, pa.string()))
    assert repeated_string("", 2).equals(pa.array(["", ""], pa.string()))
    assert repeated_string("m", 0).equals(pa.array([], pa.string()))
    assert string_scalar("NaN").equals(pa.scalar("NaN", pa.string()))
    assert float_scalar(1e-7).equals(pa.scalar(1e-7, pa.float64()))
    assert math.isnan(float_scalar(math.nan).as_py())
    assert int_scalar(-(2**62)).equals(pa.scalar(-(2**62), pa.int64()))
