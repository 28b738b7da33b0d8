"""The figures of a run report, each returned as a base64 PNG (embedded as a data URI).

matplotlib is used through :class:`matplotlib.figure.Figure` only (no pyplot, no GUI backend,
no global state), so reports can be built from worker threads and tests.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from ..errors import MissingDependencyError

__all__ = ["bars", "calibration", "heatmap", "histogram", "png_uri"]


def _figure(width: float = 6.0, height: float = 3.6) -> Any:
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError:
        raise MissingDependencyError("matplotlib", "eval") from None
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def png_uri(figure: Any) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def histogram(
    series: dict[str, Sequence[float]],
    title: str,
    xlabel: str,
    bins: int = 11,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> str:
    """Overlaid histograms of the named series."""
    figure, ax = _figure()
    for name, values in series.items():
        if values:
            ax.hist(list(values), bins=bins, range=value_range, alpha=0.6, label=f"{name} (n={len(values)})")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("items")
    if any(series.values()):
        ax.legend()
    return png_uri(figure)


def heatmap(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str, ylabel: str = "human", xlabel: str = "predicted"
) -> str:
    """A confusion matrix with its counts written in the cells."""
    figure, ax = _figure(4.6, 4.0)
    image = ax.imshow(matrix, cmap="Blues")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    ax.set_xticks(range(len(labels)), [str(x) for x in labels])
    ax.set_yticks(range(len(labels)), [str(x) for x in labels])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    figure.colorbar(image, ax=ax, shrink=0.8)
    return png_uri(figure)


def calibration(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str, bins: int = 5
) -> str:
    """For each named (predicted, truth) pair of columns: mean truth per bin of the prediction,
    dot size by count, against the diagonal."""
    figure, ax = _figure(5.0, 4.2)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for name, (predicted, truth) in curves.items():
        groups: dict[int, list[tuple[float, float]]] = {}
        for p, t in zip(predicted, truth):
            groups.setdefault(min(int(p * bins), bins - 1), []).append((p, t))
        xs, ys, sizes = [], [], []
        for key in sorted(groups):
            pairs = groups[key]
            xs.append(sum(p for p, _ in pairs) / len(pairs))
            ys.append(sum(t for _, t in pairs) / len(pairs))
            sizes.append(20 + 10 * len(pairs))
        if xs:
            ax.plot(xs, ys, marker="o", label=f"{name} (n={len(predicted)})")
            ax.scatter(xs, ys, s=sizes, alpha=0.3)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left")
    return png_uri(figure)


def bars(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    ylabel: str,
    limit: Sequence[float] | None = None,
) -> str:
    """Grouped bars per label (e.g. points per problem), with an optional maximum marked."""
    figure, ax = _figure(max(6.0, 0.5 * len(labels) * max(len(series), 1)), 3.8)
    width = 0.8 / max(len(series), 1)
    for index, (name, values) in enumerate(series.items()):
        ax.bar([i + index * width for i in range(len(labels))], list(values), width=width, label=name)
    if limit is not None:
        ax.scatter(
            [i + 0.4 - width / 2 for i in range(len(labels))],
            list(limit),
            marker="_",
            s=300,
            color="black",
            label="maximum",
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], list(labels), rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return png_uri(figure)
