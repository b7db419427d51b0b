"""Prechelt's stopping criteria GL, PQ and UP ("Early Stopping - But When?", 1998), once.

Both the early stopper (`trainer.stopping`) and the loss analysis (`trainer.analysis`) feed their
epochs through `Prechelt`, so a criterion the analysis reports as fired is one the stopper would
have fired on the same values. Pure Python, no I/O.

The edge rules, in one place:
- Only finite values are observed; a NaN or infinite value leaves the state as it was.
- GL(t) = 100 (E_va(t) - E_opt(t)) / |E_opt(t)| (percent), E_opt the plain best so far (no
  min_delta); with E_opt = 0, GL is 0 at the optimum and infinite above it.
- Strips of k epochs end at epochs divisible by k. P_k(t) = 1000 (mean - best) / |best| of the
  strip's training values (per mille), measured only when all k epochs of the strip have a finite
  training value: a partial strip is not Prechelt's P_k.
- PQ = GL / P_k; with no progress (P_k = 0) it is infinite when GL > 0, else 0.
- UP counts successive strip ends t with E_va(t) worse than E_va(t - k); a strip end without a
  value at t - k (not logged, not finite, not watched) starts the count again at 0.
- `sign` is 1 for a minimised metric, -1 for a maximised one ("best" and "worse" follow it).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["Prechelt", "PrecheltReading", "generalization_loss", "training_progress"]


def _excess(value: float, best: float, sign: int) -> float:
    """(value - best) in the "worse" direction, as a fraction of |best| (inf when best is 0)."""
    excess = sign * (value - best)
    if best == 0:
        return 0.0 if excess <= 0 else math.inf
    return excess / abs(best)


def generalization_loss(value: float, opt: float, sign: int = 1) -> float:
    """Prechelt's GL in percent: how far `value` is worse than the best so far `opt`."""
    return 100.0 * _excess(value, opt, sign)


def training_progress(strip: list[float], sign: int = 1) -> float:
    """Prechelt's P_k in per mille: how far the strip's mean training value is off its best."""
    best = min(strip) if sign > 0 else max(strip)
    return 1000.0 * _excess(sum(strip) / len(strip), best, sign)


@dataclass(frozen=True, slots=True)
class PrecheltReading:
    """The criteria after one observed epoch. `progress`/`pq` are None unless a full strip of
    training values ends here; `ups` is None except at strip ends."""

    epoch: int
    gl: float
    strip_end: bool
    progress: float | None = None
    pq: float | None = None
    ups: int | None = None
    previous: tuple[int, float] | None = None  # the strip end UP compared against


class Prechelt:
    """Running state of GL, PQ and UP for one monitored metric and its training counterpart.

    Per epoch, call `train` (if there is a training value) before `observe`. Epochs must arrive
    in increasing order.
    """

    __slots__ = ("_end", "_strip", "_ups", "k", "opt", "sign")

    def __init__(self, strip_k: int, sign: int = 1) -> None:
        self.k = strip_k
        self.sign = sign
        self.opt: float | None = None  # E_opt: the best monitored value so far
        self._strip: deque[tuple[int, float]] = deque(maxlen=strip_k)
        self._end: tuple[int, float] | None = None  # the latest strip end with a value
        self._ups = 0

    def train(self, epoch: int, value: float) -> None:
        """Take one epoch's training value (for P_k)."""
        if math.isfinite(value):
            self._strip.append((epoch, value))

    def observe(self, epoch: int, value: float) -> PrecheltReading | None:
        """Take one epoch's monitored value; None (and no change) when it is not finite."""
        if not math.isfinite(value):
            return None
        s = self.sign
        self.opt = value if self.opt is None or s * (value - self.opt) < 0 else self.opt
        gl = generalization_loss(value, self.opt, s)
        if epoch % self.k != 0:
            return PrecheltReading(epoch, gl, strip_end=False)
        previous = self._end
        rose = (
            previous is not None and previous[0] == epoch - self.k and s * (value - previous[1]) > 0
        )
        self._ups = self._ups + 1 if rose else 0
        self._end = (epoch, value)
        strip = [v for e, v in self._strip if e > epoch - self.k]
        progress = pq = None
        if len(strip) == self.k:  # distinct epochs in (t - k, t]: the whole strip
            progress = training_progress(strip, s)
            pq = gl / progress if progress > 0 else math.inf if gl > 0 else 0.0
        return PrecheltReading(epoch, gl, True, progress, pq, self._ups, previous)
