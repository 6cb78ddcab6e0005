"""Figures for the HTML report, as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io

import numpy as np

from onnxkd.report import fmt

TEACHER, STUDENT = "#4C72B0", "#DD8452"


def render_all(r: dict) -> dict[str, bytes]:
    """Plot name -> PNG; plots without data (no --data, no matched layers) are skipped."""
    plots = {"latency": latency(r)}
    if r.get("accuracy") or r.get("agreement"):
        plots["quality"] = quality(r)
    if any(c["student"] is not None for c in r.get("channels", [])):
        plots["channels"] = channels(r)
    if (r.get("compress") or {}).get("distill", {}).get("history"):
        plots["training"] = training(r)
    return plots


def _subplots(nrows: int = 1, ncols: int = 1, **kwargs):
    """A figure on its own Agg canvas: pyplot's global state (a notebook's backend, open figures) is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=kwargs.pop("figsize", None))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(nrows, ncols, **kwargs)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def latency(r: dict) -> bytes:
    """Per batch size: distributions (left) and empirical CDFs (right) of the raw samples."""
    keys = [k for k in ("latency_ms", "latency_ms_batched") if r["teacher"].get(k)]
    fig, axes = _subplots(len(keys), 2, figsize=(10, 3.2 * len(keys)), squeeze=False)
    for row, key in zip(axes, keys):
        t, s = r["teacher"][key], r["student"][key]
        hist, cdf = row
        # sub-0.1 ms models read better in µs than as 0.0064 ms
        unit, scale = ("µs", 1000.0) if max(t["p50"], s["p50"]) < 0.1 else ("ms", 1.0)
        pooled = np.asarray(t["samples"] + s["samples"]) * scale
        # one stray 2 ms run among 7 µs runs would squash the picture: zoom up to Tukey's far-out fence
        q1, q3 = np.percentile(pooled, [25, 75])
        lo, hi = pooled.min(), min(pooled.max(), q3 + 3 * (q3 - q1))
        hidden = int((pooled > hi).sum())
        if hi <= lo:  # identical samples (e.g. a single run): give the axis some width
            hi = lo + max(abs(lo) * 0.05, 1e-6)
        pad = (hi - lo) * 0.05
        bins = np.linspace(lo, hi, 31)
        for lat, color, who in ((t, TEACHER, "teacher"), (s, STUDENT, "student")):
            x = np.asarray(lat["samples"]) * scale
            hist.hist(x, bins=bins, alpha=0.6, color=color, label=f"{who} (p50 {fmt.ms(lat['p50'])})")
            hist.axvline(lat["p50"] * scale, color=color, linestyle="--", linewidth=1)
            ordered = np.sort(x)
            cdf.step(ordered, np.arange(1, len(x) + 1) / len(x), where="post", color=color, label=who)
        shown = f", {hidden} slower run(s) off the axis" if hidden else ""
        hist.set_title(f"latency distribution, batch {t['batch_size']} (n={t['n']}{shown})", fontsize=10)
        hist.set_xlim(lo - pad, hi + pad)
        cdf.set_xlim(lo - pad, hi + pad)
        hist.set_xlabel(unit)
        hist.set_ylabel("runs")
        hist.legend(fontsize=8)
        cdf.set_title(f"latency CDF, batch {t['batch_size']}", fontsize=10)
        cdf.set_xlabel(unit)
        cdf.set_ylabel("fraction of runs ≤ x")
        cdf.grid(alpha=0.3)
        cdf.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def quality(r: dict) -> bytes:
    """Accuracies and agreement as bars with their 95% bootstrap intervals."""
    names, values, errors, colors = [], [], [], []
    if r.get("accuracy"):
        acc = r["accuracy"]
        names += ["teacher accuracy", "student accuracy"]
        values += [acc["teacher"], acc["student"]]
        errors += [None, None]
        colors += [TEACHER, STUDENT]
    if r.get("agreement"):
        ag = r["agreement"]
        names.append("top-1 agreement")
        values.append(ag["top1"])
        errors.append(ag["top1_ci95"])
        colors.append("#55A868")
    fig, ax = _subplots(figsize=(6, 0.6 + 0.55 * len(names)))
    y = np.arange(len(names))[::-1]
    ax.barh(y, [v * 100 for v in values], color=colors, height=0.6)
    for yi, v, e in zip(y, values, errors):
        if e:
            ax.errorbar(v * 100, yi, xerr=[[v * 100 - e[0] * 100], [e[1] * 100 - v * 100]], color="black", capsize=4)
        right = max(v, e[1]) if e else v  # label past the error bar, not on it
        ax.text(right * 100 + 1.5, yi, f"{v * 100:.1f}%", va="center", fontsize=9)
    ax.set_yticks(y, names)
    ax.set_xlim(0, 115)
    ax.set_xlabel("%")
    n = (r.get("accuracy") or r.get("agreement"))["n"]
    ax.set_title(f"accuracy and agreement on {n} samples (bar: 95% CI)")
    fig.tight_layout()
    return _png(fig)


def channels(r: dict) -> bytes:
    """Teacher vs student output channels per layer, in graph order."""
    rows = r["channels"]
    labels = [c["layer"] for c in rows]
    y = np.arange(len(rows))[::-1]
    fig, ax = _subplots(figsize=(8, 0.8 + 0.32 * len(rows)))
    ax.barh(y, [c["teacher"] for c in rows], color=TEACHER, alpha=0.35, height=0.8, label="teacher")
    ax.barh(y, [c["student"] or 0 for c in rows], color=STUDENT, height=0.5, label="student")
    for yi, c in zip(y, rows):
        if c["kept"] is not None:
            ax.text(c["teacher"], yi, f" {c['kept'] * 100:.0f}%", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8 if len(rows) < 40 else 6)
    ax.set_xlabel("output channels")
    ax.set_title("channels kept per layer")
    ax.set_xlim(0, max(c["teacher"] for c in rows) * 1.12)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _png(fig)


def training(r: dict) -> bytes:
    """Training loss and the validation figure per epoch; the pruned and BN-recalibrated student at epoch 0."""
    d = r["compress"]["distill"]
    history = d["history"]
    fig, (loss_ax, val_ax) = _subplots(1, 2, figsize=(10, 3.4))
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["loss"] for h in history], marker="o", color=STUDENT, label="train loss")
    loss_ax.plot(epochs, [h["val"]["loss"] for h in history], marker="s", color=TEACHER, label="validation loss")
    losses = [h["loss"] for h in history] + [h["val"]["loss"] for h in history]
    if all(loss is not None and loss > 0 for loss in losses):  # a map matched exactly can reach 0: no log scale
        loss_ax.set_yscale("log")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_title("distillation loss", fontsize=10)
    loss_ax.legend(fontsize=8)
    loss_ax.grid(alpha=0.3)
    key, label, scale = _val_figure(history[-1]["val"])
    if key is not None:
        xs, ys = list(epochs), [h["val"][key] * scale for h in history]
        recalibration, initial = d.get("recalibration"), d.get("initial")
        if recalibration and recalibration["before"].get(key) is not None:
            val_ax.scatter([0], [recalibration["before"][key] * scale], color="grey", label="pruned, as cut", zorder=3)
            val_ax.scatter([0], [recalibration["after"][key] * scale], color="#55A868", zorder=3,
                           label="BN recalibrated" if recalibration.get("kept", True) else "BN recalibrated (not kept)")
        elif initial and initial.get(key) is not None:
            val_ax.scatter([0], [initial[key] * scale], color="grey", label="pruned, before training", zorder=3)
        val_ax.plot(xs, ys, marker="o", color=STUDENT, label="student")
        best = d.get("best_epoch")
        start = initial or (recalibration or {}).get("after") or {}  # where training started from
        if best in xs:
            val_ax.scatter([best], [ys[xs.index(best)]], s=120, facecolors="none", edgecolors="black",
                           label=f"best (epoch {best})", zorder=4)
        elif best == 0 and start.get(key) is not None:  # no epoch beat the student before training
            val_ax.scatter([0], [start[key] * scale], s=120, facecolors="none", edgecolors="black",
                           label="best (before training)", zorder=4)
        val_ax.set_title(f"validation {label} vs the teacher", fontsize=10)
        val_ax.set_xlabel("epoch")
        val_ax.legend(fontsize=8)
        val_ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, val_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _png(fig)


def _val_figure(val: dict) -> tuple[str | None, str, float]:
    for key, label, scale in (("accuracy", "accuracy (%)", 100.0), ("agreement", "top-1 agreement (%)", 100.0),
                              ("token_agreement", "top-1 agreement per token (%)", 100.0),
                              ("output_error", "relative output error", 1.0)):
        if val.get(key) is not None:
            return key, label, scale
    return None, "", 1.0
