"""From the analysis engine's state to a `LossAnalysis`: verdict, recommendation, words.

Reads the state only. The verdict follows a fixed priority (diverging, too_early, overfitting,
converged/plateaued, improving); reasons and evidence quote the numbers they rest on.
"""

from __future__ import annotations

import math

from trainer.analysis.decision import MARGIN_FRACTION, StopCall, stop_call
from trainer.analysis.engine import MIN_POINTS, Criterion, Engine, Series, Trend
from trainer.analysis.models import (
    FlagName,
    ForecastSummary,
    GeneralizationGap,
    LossAnalysis,
    LossFlag,
    Recommendation,
    StoppingCriteria,
    StoppingCriterion,
    TrendSummary,
    Verdict,
    output_float,
)

__all__ = ["Report"]

# A run whose best is at least 5% better than where it started "learned something": when it stalls
# it has converged; below that it is stuck on a plateau (W&B diagnose and ktrdr both use 5%).
_LEARNED_FRACTION = 0.05


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _trend_model(metric: str, trend: Trend, sign: int) -> TrendSummary:
    return TrendSummary(
        metric=metric,
        from_epoch=trend.from_epoch,
        to_epoch=trend.to_epoch,
        points=trend.points,
        slope_per_epoch=output_float(trend.slope),
        relative_change_pct=output_float(trend.relative_change_pct),
        noise=output_float(trend.noise),
        noise_pct=output_float(trend.noise_pct),
        direction=trend.direction(sign),
    )


def _criterion_model(criterion: Criterion, threshold: float) -> StoppingCriterion:
    return StoppingCriterion(
        fired=criterion.fired_at is not None,
        epoch=criterion.fired_at,
        value=output_float(criterion.value),
        value_epoch=criterion.epoch,
        threshold=threshold,
    )


_FLAG_ORDER: tuple[FlagName, ...] = (
    "non_finite",
    "divergence",
    "overfitting",
    "plateau",
    "oscillation",
)


def _pct(fraction: float) -> str:
    return f"{100.0 * fraction:.1f}%"


class Report:
    """Builds a `LossAnalysis` from an engine's state; only reads it."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.p = engine.params
        self.mon = engine.mon
        self.name = engine.plan.monitor
        self.sign = engine.sign
        best = self.mon.best
        last = engine.last_epoch
        self.stall = last - best[0] if best is not None and last is not None else None
        self._worse = "above" if self.sign > 0 else "below"
        self.call: StopCall | None = stop_call(engine)

    def build(self) -> LossAnalysis:
        e, mon = self.e, self.mon
        verdict = self._verdict()
        recommendation = self._recommendation(verdict)
        latest = mon.latest
        return LossAnalysis(
            monitor=self.name,
            mode=e.plan.mode,
            train_metric=e.plan.train,
            epochs_analyzed=e.epochs,
            first_epoch=e.first_epoch,
            last_epoch=e.last_epoch,
            best_epoch=mon.best[0] if mon.best is not None else None,
            best_value=output_float(mon.best[1]) if mon.best is not None else None,
            current_value=output_float(latest[1]) if latest is not None else None,
            current_epoch=latest[0] if latest is not None else None,
            epochs_since_improvement=self.stall,
            trend=_trend_model(mon.name, mon.trend, self.sign) if mon.trend is not None else None,
            train_trend=self._train_trend(),
            generalization_gap=self._gap(),
            flags=[
                LossFlag(name=name, since_epoch=e.since[name], evidence=self._evidence(name))
                for name in _FLAG_ORDER
                if name in e.since
            ],
            criteria=StoppingCriteria(
                gl=_criterion_model(e.gl, self.p.gl_alpha),
                pq=_criterion_model(e.pq, self.p.pq_alpha),
                up=_criterion_model(e.up, self.p.up_strips),
                patience=_criterion_model(e.patience, self.p.patience),
            ),
            forecast=self._forecast(),
            verdict=verdict,
            recommendation=recommendation,
            confidence=round(self._confidence(verdict, recommendation), 3),
            reasons=self._reasons(verdict, recommendation)[:3],
            notes=self._notes(),
            params=self.p,
        )

    # -- parts ---------------------------------------------------------------------------------

    def _train_trend(self) -> TrendSummary | None:
        train = self.e.train
        if train is None or train is self.mon or train.trend is None:
            return None
        return _trend_model(train.name, train.trend, train.sign)

    def _gap(self) -> GeneralizationGap | None:
        gap, train = self.e.gap, self.e.plan.train
        if gap is None or train is None:
            return None
        trend, latest = gap.trend, gap.latest
        return GeneralizationGap(
            val_metric=self.name,
            train_metric=train,
            value=output_float(latest[1]) if latest is not None else None,
            epoch=latest[0] if latest is not None else None,
            slope_per_epoch=output_float(trend.slope) if trend is not None else None,
            change_over_window=output_float(trend.change) if trend is not None else None,
            widening=self.e.gap_widening,
        )

    def _forecast(self) -> ForecastSummary | None:
        call = self.call
        if call is None or call.forecast is None:
            return None
        fc, last = call.forecast, self.e.last_epoch or 0
        return ForecastSummary(
            horizon=fc.horizon,
            epochs_left=fc.horizon - last,
            probability=round(fc.probability, 3),
            margin=output_float(call.margin),
            expected_final=output_float(self.sign * fc.expected_final),
            final_sd=output_float(fc.final_sd),
            model="power law" if fc.model == "power law" else "exponential",
            noise=output_float(fc.sigma),
        )

    def _verdict(self) -> Verdict:
        e = self.e
        if e.diverging is not None:
            return "diverging"
        if self.mon.finite_count < MIN_POINTS:
            return "too_early"
        if "overfitting" in e.since:
            return "overfitting"
        if "plateau" in e.since:
            learned = self._learned()
            return (
                "converged" if learned is not None and learned >= _LEARNED_FRACTION else "plateaued"
            )
        return "improving"

    def _recommendation(self, verdict: Verdict) -> Recommendation:
        """The flags say what is wrong; the forecast says whether continuing can still pay. A
        stop needs the forecast's consent (see `decision.stop_call`), whatever the flags."""
        if verdict == "too_early":
            return "wait_for_more_epochs"
        stop = self.call is not None and self.call.stop
        if verdict == "diverging":
            # A broken run needs a look first; one that has had a whole window to come back to
            # its best and whose forecast sees nothing worth its epochs is stopped (the flag and
            # the reasons still say it diverged).
            if stop and (self.stall or 0) >= self.p.window:
                return "stop_and_restore_best"
            return "investigate_divergence"
        if stop:
            return "stop_and_restore_best"
        if verdict == "overfitting":
            return "add_regularization"
        if verdict == "plateaued" or "oscillation" in self.e.since:
            return "reduce_learning_rate"
        return "continue"

    def _start(self) -> tuple[str, int, float] | None:
        """Where the run started: the worse first value of the monitor and its training
        counterpart (training's first value averages over the untrained model's first epoch)."""
        starts = [
            (s.name, s.first[0], s.first[1])
            for s in (self.mon, self.e.train)
            if s is not None and s.first is not None
        ]
        return max(starts, key=lambda start: self.sign * start[2], default=None)

    def _learned(self) -> float | None:
        """How much better the best is than the start, as a fraction of the start."""
        start, best = self._start(), self.mon.best
        if start is None or best is None or start[2] == 0:
            return None
        return self.sign * (start[2] - best[1]) / abs(start[2])

    def _confidence(self, verdict: Verdict, recommendation: Recommendation) -> float:
        e, p, mon = self.e, self.p, self.mon
        if verdict == "too_early":
            return 1.0  # a fact about the data, not a guess
        # Once the run has shown a trend, the confidence of a stop or a continue is the stop
        # prior's probability that it is the right call: that stopping now loses at most 1 % of
        # the improvement, or more (bench/stop_decisions.py reports the calibration).
        risk = self.call.risk if self.call is not None else None
        if risk is not None and recommendation == "stop_and_restore_best":
            return 1.0 - risk
        if risk is not None and recommendation == "continue":
            return risk
        if verdict == "diverging":
            assert e.diverging is not None
            rise = e.diverging.rise
            if rise is None:
                return 1.0
            return 0.6 + 0.4 * min(1.0, (1 + rise) / p.divergence_factor - 1)
        sufficiency = 0.5 + 0.5 * min(1.0, mon.finite_count / p.window)
        if verdict == "overfitting":
            signals = [
                e.overfit_gl,
                e.overfit_gap,
                e.gap_widening,
                e.up.fired_at is not None,
                e.pq_now,
            ]
            return sufficiency * min(1.0, 0.5 + 0.125 * sum(signals))
        if verdict in ("converged", "plateaued"):
            return sufficiency * (0.5 + 0.5 * min(1.0, (self.stall or 0) / (2 * p.patience)))
        trend = mon.trend
        if trend is None or trend.worse(self.sign) >= 0:
            return 0.3 * sufficiency
        noise = trend.noise or 0.0
        clarity = 1.0 if noise == 0 else min(1.0, abs(trend.change) / (3 * noise))
        return sufficiency * (0.5 + 0.5 * clarity)

    # -- words ---------------------------------------------------------------------------------

    def _moved(self, series: Series) -> str | None:
        """'fell 8.0% over epochs 12-21' for a series' trend."""
        trend = series.trend
        if trend is None or trend.relative_change_pct is None:
            return None
        span = f"over epochs {trend.from_epoch}-{trend.to_epoch}"
        pct = trend.relative_change_pct
        if pct == 0:
            return f"stayed flat {span}"
        return f"{'fell' if pct < 0 else 'rose'} {abs(pct):.1f}% {span}"

    def _best_words(self) -> str:
        best = self.mon.best
        return f"its best {_fmt(best[1])} at epoch {best[0]}" if best is not None else "no best"

    def _evidence(self, name: str) -> str:
        e, p, mon = self.e, self.p, self.mon
        if name == "non_finite":
            parts = []
            for series in e.series.values():
                if series.nonfinite_count:
                    shown = ", ".join(map(str, series.nonfinite_epochs))
                    more = ", ..." if series.nonfinite_count > len(series.nonfinite_epochs) else ""
                    state = "still" if series.latest_finite is None else "finite again"
                    parts.append(
                        f"{series.name} was not finite at {series.nonfinite_count} epoch(s) "
                        f"({shown}{more}) and is {state} now"
                    )
            return "; ".join(parts)
        if name == "divergence":
            found = e.diverging
            assert found is not None
            latest = e.series[found.metric].latest
            assert latest is not None
            if found.rise is None or found.reference is None:
                return f"{found.metric} is {latest[1]} at epoch {latest[0]}"
            ref_epoch, ref_value = found.reference
            return (
                f"{found.metric} rose from {_fmt(ref_value)} (its {found.reference_kind}, epoch "
                f"{ref_epoch}) to {_fmt(latest[1])} at epoch {latest[0]}: {found.rise:.2f} times "
                f"{_fmt(found.scale or 0.0)}, more than divergence_factor {p.divergence_factor:g}"
                " - 1 (the scale is the larger of that value and a quarter of the first one)"
            )
        if name == "overfitting":
            parts = []
            train = e.train
            moved = self._moved(train) if train is not None else None
            if e.overfit_gl and e.gl.value is not None:
                parts.append(
                    f"{self.name} is {e.gl.value:.1f}% {self._worse} {self._best_words()} "
                    f"(GL alpha {p.gl_alpha:g}) while {e.plan.train} {moved}"
                )
            if e.overfit_gap and e.gap is not None and e.gap.trend is not None:
                gap = e.gap.trend
                parts.append(
                    f"the {self.name} - {e.plan.train} gap moved by {_fmt(gap.change)} over "
                    f"epochs {gap.from_epoch}-{gap.to_epoch} while {self.name} worsened and "
                    f"{e.plan.train} {moved}"
                )
            return "; ".join(parts)
        if name == "plateau":
            text = (
                f"{self.name} has not improved by more than {p.min_delta:g} for {self.stall} "
                f"epoch(s) since {self._best_words()} (patience {p.patience})"
            )
            if e.pq_now and e.pq.epoch is not None:
                value = e.pq.value
                shown = (
                    "infinite (no training progress)"
                    if value is None or not math.isfinite(value)
                    else f"{value:.2f}"
                )
                text += f"; Prechelt PQ is {shown} > {p.pq_alpha:g} at epoch {e.pq.epoch}"
            return text
        trend = mon.trend
        assert trend is not None and e.noise_pct is not None
        return (
            f"the noise around the {self.name} trend is {e.noise_pct:.1f}% of its level, "
            f"larger than the trend's move of {_fmt(abs(trend.change))} over epochs "
            f"{trend.from_epoch}-{trend.to_epoch}"
        )

    def _reasons(self, verdict: Verdict, recommendation: Recommendation) -> list[str]:
        """The verdict's own reasons, with what the forecast says second (the first reason is the
        verdict's evidence)."""
        reasons = self._verdict_reasons(verdict)
        words = self._forecast_words(recommendation) if verdict != "too_early" else None
        if words is None:
            return reasons
        return [*reasons[:1], words, *reasons[1:]]

    def _forecast_words(self, recommendation: Recommendation) -> str | None:
        call, best = self.call, self.mon.best
        if call is None or best is None:
            return None
        name = self.name
        if call.forecast is None:
            noise = self.mon.trend.noise if self.mon.trend is not None else None
            return (
                f"No forecast yet: {name} has improved by {_fmt(call.improvement)} since its "
                f"first value, not yet more than {_fmt(3 * (noise or 0.0))} (3 noise levels); "
                "the run has not shown its trend."
            )
        fc = call.forecast
        left = fc.horizon - (self.e.last_epoch or 0)
        if left <= 0:  # the run has used its budget: there is nothing to continue to
            return None
        share = (
            "min_delta"
            if call.margin == self.p.min_delta
            else f"{100 * MARGIN_FRACTION:g}% of the improvement so far"
        )
        gain = next((g for epoch, g in fc.gains if epoch == fc.horizon), None)
        expected = (
            ""
            if gain is None
            else f" is expected to improve the best by {_fmt(gain)} "
            f"({_pct(gain / max(call.improvement, fc.sigma))} of the improvement so far) and"
        )
        text = (
            f"Continuing {left} more epoch(s) (to epoch {fc.horizon}){expected} beats the best "
            f"{_fmt(best[1])} by more than {_fmt(call.margin)} ({share}) with probability "
            f"{fc.probability:.2f}; the {fc.model} fit expects "
            f"{_fmt(self.sign * fc.expected_final)} +- {_fmt(fc.final_sd)} at epoch {fc.horizon}"
        )
        if call.improving and recommendation != "stop_and_restore_best":
            text += f", and {name} still improves beyond its noise"
        return text + "."

    def _verdict_reasons(self, verdict: Verdict) -> list[str]:
        e, p, mon = self.e, self.p, self.mon
        name = self.name
        latest = mon.latest
        if verdict == "too_early":
            reasons = [
                f"Only {mon.finite_count} finite {name} value(s) so far; at least {MIN_POINTS} "
                "are needed to judge a trend."
            ]
            if latest is not None:
                reasons.append(f"{name} is {_fmt(latest[1])} at epoch {latest[0]}.")
            return reasons
        if verdict == "diverging":
            assert e.diverging is not None
            metric = e.diverging.metric
            series = e.series[metric]
            assert series.latest is not None
            if e.diverging.rise is None:
                reasons = [f"{metric} is {series.latest[1]} at epoch {series.latest[0]}."]
                last_finite = series.window[-1] if series.window else None
                if last_finite is not None:
                    reasons.append(
                        f"Its last finite value was {_fmt(last_finite[1])} at epoch "
                        f"{last_finite[0]}."
                    )
                return reasons
            return [f"{self._evidence('divergence')}."]
        best = mon.best
        assert best is not None and latest is not None
        reasons = []
        if verdict == "overfitting":
            train = e.train
            moved = self._moved(train) if train is not None else None
            gl = e.gl.value
            if e.overfit_gl and gl is not None:
                reasons.append(
                    f"{name} is {gl:.1f}% {self._worse} its best at epoch {best[0]} while "
                    f"{e.plan.train} {moved}."
                )
            elif e.gap is not None and e.gap.trend is not None:
                gap = e.gap.trend
                reasons.append(
                    f"The {name} - {e.plan.train} gap moved by {_fmt(gap.change)} over epochs "
                    f"{gap.from_epoch}-{gap.to_epoch} while {name} worsened and "
                    f"{e.plan.train} {moved}."
                )
            if e.gl.fired_at is not None:
                reasons.append(
                    f"Prechelt's GL{p.gl_alpha:g} would have stopped the run at epoch "
                    f"{e.gl.fired_at}; the best {name} is {_fmt(best[1])} at epoch {best[0]}."
                )
            return reasons
        if verdict in ("converged", "plateaued"):
            learned, start = self._learned(), self._start()
            stalled = f"{name} has not improved for {self.stall} epochs (patience {p.patience})"
            if start is None or learned is None or learned <= 0:
                reasons.append(
                    f"{stalled} and its best {_fmt(best[1])} at epoch {best[0]} is no better "
                    "than where the run started."
                )
            else:
                reasons.append(
                    f"{stalled}; its best {_fmt(best[1])} at epoch {best[0]} is {_pct(learned)} "
                    f"better than the start ({start[0]} {_fmt(start[2])} at epoch {start[1]})."
                )
            if e.pq_now:
                reasons.append(f"Prechelt's PQ: {self._evidence('plateau').split('; ')[-1]}.")
            if e.train is not None and e.train is not mon:
                moved = self._moved(e.train)
                if moved is not None:
                    reasons.append(f"{e.plan.train} {moved}.")
            return reasons
        moved = self._moved(mon)
        if moved is not None:
            reasons.append(f"{name} {moved}, now {_fmt(latest[1])} at epoch {latest[0]}.")
        if "oscillation" in e.since:
            reasons.append(
                f"Oscillating: {self._evidence('oscillation')}; lower the learning rate."
            )
        if self.stall:
            worse = mon.trend is not None and mon.trend.direction(self.sign) == "worsening"
            reasons.append(
                f"The best {name} is {_fmt(best[1])} at epoch {best[0]}, {self.stall} epoch(s) "
                f"ago (patience {p.patience})"
                + (": too soon to call a plateau or overfitting." if worse else ".")
            )
        if not reasons:
            reasons.append(f"{name} is {_fmt(latest[1])} at epoch {latest[0]}, its best so far.")
        return reasons

    def _notes(self) -> list[str]:
        notes = []
        if self.e.plan.note is not None:
            notes.append(self.e.plan.note)
        latest = self.mon.latest
        if latest is None and self.e.epochs:
            notes.append(f"No epoch reports {self.name}.")
        elif latest is not None and not math.isfinite(latest[1]):
            notes.append(
                f"current_value is None because {self.name} is {latest[1]} at epoch {latest[0]}."
            )
        return notes
