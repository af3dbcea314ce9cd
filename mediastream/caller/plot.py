"""``--plot``: the latency CDF and latency over time in one PNG (matplotlib, optional).

One series per run -- one server, or each server of a comparison
(``mediastream call URL_A URL_B``), overlaid on the same axes and named by its
``--label`` or URL. The latency drawn is the run's gate (:attr:`RunReport.gate`):
audible by default, what the caller hears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .report import RunReport

__all__ = ["PlotUnavailable", "plot_report", "plot_reports", "require_matplotlib"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """The ``matplotlib.pyplot`` module (Agg backend), or :class:`PlotUnavailable`:
    checked before a run, so a missing package is said before the calls, not after."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'mediastream[plot]' (or matplotlib)"
        ) from None
    return plt


def plot_report(report: RunReport, path: str | Path) -> None:
    """:func:`plot_reports` for one run."""
    plot_reports([report], path)


def _kind(report: RunReport) -> str:
    base = "round trip" if report.latency_kind == "probe_round_trip" else "response time"
    return "audible" if report.gate == "audible" else base


def plot_reports(reports: list[RunReport], path: str | Path) -> None:
    """Draw each run's latency CDF (left) and its latency over the calls' time (right),
    overlaid, to ``path``."""
    plt = require_matplotlib()
    fig, (cdf, timeline) = plt.subplots(1, 2, figsize=(13, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    kind = _kind(reports[0])
    for i, report in enumerate(reports):
        colour = colours[i % len(colours)]
        values = np.sort(np.asarray(report.gated_ms, dtype=np.float64))
        if not values.size:
            cdf.plot([], [], color=colour, label=f"{report.name}: no latency measured")
            continue
        p50, p99 = (float(np.percentile(values, q)) for q in (50, 99))
        cdf.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                 color=colour, label=f"{report.name}: p50 {p50:.1f}, p99 {p99:.1f} ms "
                                     f"(n={values.size})")
        for v, style in ((p50, ":"), (p99, "--")):
            cdf.axvline(v, color=colour, linestyle=style, linewidth=1, alpha=0.7)
        xs: list[float] = []
        ys: list[float] = []
        for call in report.calls:
            latencies = (call.latencies_ms if report.gate == "round-trip" else
                         [v + q for v, q in zip(call.latencies_ms, call.queue_ms, strict=True)])
            xs.extend(call.latency_times_s)
            ys.extend(latencies)
        timeline.scatter(xs, ys, s=6, color=colour, alpha=0.6, label=report.name)
    cdf.set_xlabel(f"{kind} latency (ms)")
    cdf.set_ylabel("fraction of measurements")
    cdf.grid(alpha=0.3)
    cdf.legend(fontsize=8, loc="lower right")
    timeline.set_xlabel("time since the run started (s)")
    timeline.set_ylabel(f"{kind} latency (ms)")
    timeline.grid(alpha=0.3)
    if len(reports) > 1:
        timeline.legend(fontsize=8, loc="upper right")
    first = reports[0]
    calls = " / ".join(str(len(r.calls)) for r in reports)
    if len(reports) == 1:
        title = f"{first.name} — {first.provider}, {calls} calls"
    else:
        title = (f"{' vs '.join(r.name for r in reports)} — {first.provider}, "
                 f"{calls} calls (interleaved)")
    fig.suptitle(title, fontsize=11)
    cdf.set_title(f"{kind} latency CDF (dotted p50, dashed p99)", fontsize=9)
    timeline.set_title(f"each measurement over time ({kind})", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
