"""``--plot``: a latency CDF and a per-call timeline in one PNG (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .report import RunReport

__all__ = ["PlotUnavailable", "plot_report"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def plot_report(report: RunReport, path: str | Path) -> None:
    """Draw the latency CDF (left) and each call's probes over time (right) to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'mediastream[plot]' (or matplotlib)"
        ) from None
    fig, (cdf, timeline) = plt.subplots(1, 2, figsize=(13, 5))
    values = np.sort(np.asarray(report.latencies_ms, dtype=np.float64))
    label = "round trip" if report.latency_kind == "probe_round_trip" else "response time"
    if values.size:
        cdf.step(values, np.arange(1, values.size + 1) / values.size, where="post")
        for q, style in ((50, ":"), (99, "--")):
            v = float(np.percentile(values, q))
            cdf.axvline(v, color="grey", linestyle=style, linewidth=1)
            cdf.annotate(f"p{q} {v:.1f} ms", (v, 0.02 + 0.1 * (q == 99)), fontsize=8)
    else:
        cdf.text(0.5, 0.5, "no latency measured", ha="center", transform=cdf.transAxes)
    cdf.set_xlabel(f"{label} latency (ms)")
    cdf.set_ylabel("fraction of measurements")
    cdf.set_title(f"{report.provider}: {len(report.calls)} calls, {values.size} measurements")
    cdf.grid(alpha=0.3)

    xs: list[float] = []
    ys: list[int] = []
    cs: list[float] = []
    for call in report.calls:
        y = call.index
        if call.handshake_failed:
            timeline.plot([call.started_at], [y], "rx", markersize=5)
            continue
        timeline.hlines(y, call.started_at, call.started_at + call.duration_s,
                        color="lightgrey", linewidth=1)
        xs.extend(call.latency_times_s)
        ys.extend([y] * len(call.latency_times_s))
        cs.extend(call.latencies_ms)
        if call.end in ("aborted", "half_open", "server_closed"):
            timeline.plot([call.started_at + call.duration_s], [y], "k|", markersize=8)
    if xs:
        points = timeline.scatter(xs, ys, c=cs, s=8, cmap="viridis")
        fig.colorbar(points, ax=timeline, label=f"{label} (ms)")
    timeline.set_xlabel("time since the run started (s)")
    timeline.set_ylabel("call")
    from matplotlib.ticker import MaxNLocator

    timeline.yaxis.set_major_locator(MaxNLocator(integer=True))
    timeline.set_title("per call: probes (colour = latency), x = failed, | = cut short")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
