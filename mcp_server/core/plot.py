"""PNG plots of metric curves (matplotlib's Agg backend, no display needed)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

__all__ = ["Curve", "render_png"]


@dataclass
class Curve:
    label: str
    metric: str
    steps: list[int]
    values: list[float | None]
    best_step: int | None = field(default=None)


def render_png(curves: list[Curve], x_label: str) -> bytes:
    """Draw every curve (one axis per metric family: losses, accuracies, others); non-finite points
    are gaps; the best epoch of each run is marked with a dot."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    families: dict[str, list[Curve]] = {}
    for curve in curves:
        family = (
            "accuracy"
            if "acc" in curve.metric
            else "loss"
            if "loss" in curve.metric
            else (curve.metric)
        )
        families.setdefault(family, []).append(curve)
    fig = Figure(figsize=(8, 3.2 * len(families)), dpi=90, layout="constrained")
    axes = fig.subplots(len(families), 1, squeeze=False)[:, 0]
    for ax, (family, members) in zip(axes, families.items(), strict=True):
        for curve in members:
            ys = [math.nan if v is None else v for v in curve.values]
            # '$' would start matplotlib's math text, which a run's name may not parse as
            label = curve.label.replace("$", r"\$")
            (line,) = ax.plot(curve.steps, ys, label=label, linewidth=1.5)
            if curve.best_step is not None and curve.best_step in curve.steps:
                i = curve.steps.index(curve.best_step)
                if curve.values[i] is not None:
                    ax.plot([curve.best_step], [curve.values[i]], "o", color=line.get_color())
        ax.set_ylabel(family)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
