"""Read a run's metric history back whole: every point exactly as stored, as rows or a DataFrame.

    from training_mcp.history import history, to_pandas

    rows = history("http://127.0.0.1:8765", "op-k3f9x2ab", metrics=["val_loss"])
    frame = to_pandas("http://127.0.0.1:8765", "op-k3f9x2ab")  # needs pandas

Both stream the server's export (`GET /api/v1/operations/{id}/metrics/export`): ordered by
(name, step), never downsampled, NaN and the infinities as floats. `to_pandas` reads the CSV
export with pandas' C parser, or the Arrow export where pyarrow is installed (here and on the
server); `history` needs nothing but httpx.
"""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # imported where a request is made: `import training_mcp` stays light
    import httpx

__all__ = ["HistoryError", "HistoryRow", "history", "to_pandas"]


class HistoryError(Exception):
    """The server refused the read; `code` and `field` are its error's (e.g. not_found).
    `export_interrupted` (status 200): the export broke off half way; nothing partial is
    returned."""

    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.field = status, code, field


class HistoryRow(NamedTuple):
    name: str
    step: int
    epoch: int | None
    value: float
    wall_time: float


@contextmanager
def _export(
    url: str,
    operation_id: str,
    metrics: Sequence[str] | None,
    fmt: str,
    token: str | None,
    client: httpx.Client | None,
    timeout: float,
) -> Iterator[httpx.Response]:
    params: dict[str, str] = {"format": fmt}
    if metrics:
        params["metrics"] = ",".join(metrics)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = f"/api/v1/operations/{operation_id}/metrics/export"
    import httpx

    own = client is None
    http = client or httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
    try:
        with http.stream("GET", path, params=params, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                raise _error(response)
            try:
                yield response
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # A server whose export fails half way cuts the body short of its last chunk.
                raise HistoryError(
                    200,
                    "export_interrupted",
                    f"the server ended the export of {operation_id} before its last byte "
                    f"({exc}); its log says why",
                    None,
                ) from exc
    finally:
        if own:
            http.close()


def _error(response: httpx.Response) -> HistoryError:
    try:
        detail: dict[str, Any] = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        detail = {"code": "http_error", "message": response.text[:200]}
    return HistoryError(
        response.status_code,
        str(detail.get("code")),
        str(detail.get("message")),
        detail.get("field"),
    )


def history(
    url: str,
    operation_id: str,
    metrics: Sequence[str] | None = None,
    *,
    token: str | None = None,
    client: httpx.Client | None = None,
    timeout: float = 60.0,
) -> list[HistoryRow]:
    """Every stored point of the run's metrics (all of them by default), by (name, step).

    `client` reuses an `httpx.Client` whose `base_url` is the server (then `url` is unused)."""
    with _export(url, operation_id, metrics, "jsonl", token, client, timeout) as response:
        # json.loads reads the NaN / Infinity / -Infinity tokens the export writes.
        return [
            HistoryRow(r["name"], r["step"], r["epoch"], float(r["value"]), r["wall_time"])
            for r in map(json.loads, response.iter_lines())
            if r
        ]


def to_pandas(
    url: str,
    operation_id: str,
    metrics: Sequence[str] | None = None,
    *,
    token: str | None = None,
    client: httpx.Client | None = None,
    timeout: float = 60.0,
) -> Any:
    """`history` as a `pandas.DataFrame` with columns name, step, epoch (nullable), value and
    wall_time. Raises ImportError, saying so, when pandas is not installed.

    With pyarrow installed it reads the Arrow export (columns as the server holds them, no
    text to parse); from a server without pyarrow, or without pyarrow here, the CSV export."""
    try:
        import pandas  # noqa: F401  # both readers need it
    except ImportError as exc:
        raise ImportError("to_pandas needs pandas: pip install pandas") from exc
    if importlib.util.find_spec("pyarrow") is not None:
        try:
            return _arrow_frame(url, operation_id, metrics, token, client, timeout)
        except HistoryError as exc:
            if exc.field != "format":  # anything but a server without pyarrow
                raise
    return _csv_frame(url, operation_id, metrics, token, client, timeout)


def _csv_frame(
    url: str,
    operation_id: str,
    metrics: Sequence[str] | None,
    token: str | None,
    client: httpx.Client | None,
    timeout: float,
) -> Any:
    import pandas as pd

    with _export(url, operation_id, metrics, "csv", token, client, timeout) as response:
        body = response.read()
    return pd.read_csv(
        io.BytesIO(body),
        dtype={"name": "string", "step": "int64", "epoch": "Int64", "value": "float64"},
    )


def _arrow_frame(
    url: str,
    operation_id: str,
    metrics: Sequence[str] | None,
    token: str | None,
    client: httpx.Client | None,
    timeout: float,
) -> Any:
    import pandas as pd
    import pyarrow as pa

    with _export(url, operation_id, metrics, "arrow", token, client, timeout) as response:
        body = response.read()
    table = pa.ipc.open_stream(body).read_all()
    # The same dtypes as the CSV path: a string name, a nullable integer epoch.
    kinds = {pa.string(): pd.StringDtype(), pa.int32(): pd.Int64Dtype()}
    return table.to_pandas(types_mapper=kinds.get)
