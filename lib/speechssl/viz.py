"""Figures and tables shared by the chapters.

Figures are kept small (``setup_plots``) because notebooks are committed with their outputs.
:class:`Table` now lives in :mod:`speechssl.report` (imported here for existing code).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .report import Table  # noqa: F401  (moved to speechssl.report; kept here for existing imports)


def setup_plots(dpi: int = 72) -> None:
    """Small, consistent figures (the PNGs are stored in the notebooks)."""
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "figure.figsize": (9, 3.2),
                         "axes.grid": False, "font.size": 9, "axes.titlesize": 10})


def _segments(alignment, sample_rate):
    return [(p, s / sample_rate, e / sample_rate) for p, s, e in alignment]


def draw_alignment(ax, alignment, sample_rate: int = 16000, *, label_sil: bool = False, y: float = 1.02,
                   fontsize: int = 8) -> None:
    """Phone boundaries as vertical lines and phone names above the axes (time in seconds)."""
    for phone, start, end in _segments(alignment, sample_rate):
        ax.axvline(start, color="0.3", lw=0.5, alpha=0.6)
        if phone != "sil" or label_sil:
            ax.text((start + end) / 2, y, phone, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=fontsize, rotation=90 if end - start < 0.04 else 0)


def plot_utterance(audio: np.ndarray, alignment, spectrogram: np.ndarray, mfcc: np.ndarray,
                   sample_rate: int = 16000, title: str = "") -> plt.Figure:
    """Waveform, log spectrogram and MFCC of one utterance, with its phone alignment on top."""
    t_end = len(audio) / sample_rate
    fig, axes = plt.subplots(3, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.4, 1.2]})
    axes[0].plot(np.arange(len(audio)) / sample_rate, audio, lw=0.4, color="C0")
    axes[0].set_ylabel("amplitude")
    draw_alignment(axes[0], alignment, sample_rate)
    hop = 0.01
    axes[1].imshow(spectrogram.T, origin="lower", aspect="auto", cmap="magma",
                   extent=[0, spectrogram.shape[0] * hop, 0, sample_rate / 2000])
    axes[1].set_ylabel("frequency (kHz)")
    axes[2].imshow(mfcc.T, origin="lower", aspect="auto", cmap="coolwarm", interpolation="nearest",
                   extent=[0, mfcc.shape[0] * hop, 0, mfcc.shape[1]],
                   vmin=-np.percentile(np.abs(mfcc), 98), vmax=np.percentile(np.abs(mfcc), 98))
    axes[2].set_ylabel("MFCC + Δ + ΔΔ")
    axes[2].set_xlabel("time (s)")
    for ax in axes[1:]:
        for _, start, _ in _segments(alignment, sample_rate):
            ax.axvline(start, color="w", lw=0.4, alpha=0.5)
    axes[0].set_xlim(0, t_end)
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return fig


def plot_phone_histogram(counts: np.ndarray, phones: Sequence[str], title: str = "") -> plt.Figure:
    """Bar chart of frame counts per phone, sorted by frequency."""
    order = np.argsort(counts)[::-1]
    fig, ax = plt.subplots(figsize=(10, 2.8))
    ax.bar(range(len(order)), counts[order] / counts.sum(), color="C2")
    ax.set_xticks(range(len(order)), [phones[i] for i in order], rotation=90, fontsize=8)
    ax.set_ylabel("share of frames")
    ax.set_xlim(-0.6, len(order) - 0.4)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_quality_vs_k(ks: Sequence[int], results: Sequence[dict], paper: dict | None = None) -> plt.Figure:
    """Phone purity, cluster purity and PNMI against the number of clusters K (log axis)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for key, label, color in [("phone_purity", "phone purity", "C0"), ("cluster_purity", "cluster purity", "C1"),
                              ("pnmi", "PNMI", "C3")]:
        ax.plot(ks, [r[key] for r in results], "o-", color=color, label=f"{label} (this corpus)")
        if paper:
            pk = sorted(paper)
            ax.plot(pk, [paper[k][key] for k in pk], "s--", color=color, alpha=0.45,
                    label=f"{label} (HuBERT paper, LibriSpeech)")
    ax.set_xscale("log")
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.set_xlabel("number of clusters K")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    return fig


def plot_cooccurrence(counts: np.ndarray, phones: Sequence[str], title: str = "", max_units: int | None = None,
                      xlabel: str = "unit (sorted by its most frequent phone)") -> plt.Figure:
    """p(phone | unit) as a heatmap, units ordered by their most likely phone.

    A diagonal-looking band means units specialise on phones; a smeared picture means they
    do not.
    """
    counts = np.asarray(counts, dtype=float)
    used = np.flatnonzero(counts.sum(0) > 0)
    cond = counts[:, used] / counts[:, used].sum(0, keepdims=True)
    order = np.lexsort((-cond.max(0), cond.argmax(0)))
    if max_units:
        order = order[:max_units]
    fig, ax = plt.subplots(figsize=(10, 5))
    im = ax.imshow(cond[:, order], aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(phones)), phones, fontsize=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("phone")
    fig.colorbar(im, ax=ax, label="p(phone | unit)", fraction=0.03)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_units_against_phones(alignment, units: np.ndarray, frame_hop_s: float, sample_rate: int = 16000,
                              title: str = "", max_seconds: float | None = None) -> plt.Figure:
    """The unit sequence of one utterance under its phone alignment.

    Each frame is drawn as a coloured cell whose number is the unit id (runs of the same unit
    are labelled once), so one can see whether unit changes line up with phone boundaries.
    ``max_seconds`` keeps only the beginning of the utterance, so that the labels stay legible.
    """
    units = np.asarray(units)
    if max_seconds is not None:
        units = units[: int(round(max_seconds / frame_hop_s))]
        end = int(round(len(units) * frame_hop_s * sample_rate))
        alignment = [(p, s, min(e, end)) for p, s, e in alignment if s < end]
    fig, ax = plt.subplots(figsize=(10, 2.1))
    t = np.arange(len(units)) * frame_hop_s
    cmap = plt.get_cmap("tab20")
    ax.bar(t, np.ones_like(t), width=frame_hop_s, align="edge", color=[cmap(u % 20) for u in units], lw=0)
    run_start = 0
    for i in range(1, len(units) + 1):
        if i == len(units) or units[i] != units[run_start]:
            if (i - run_start) * frame_hop_s >= 0.03:
                ax.text((t[run_start] + i * frame_hop_s) / 2, 0.5, str(units[run_start]), ha="center",
                        va="center", fontsize=6, rotation=90)
            run_start = i
    draw_alignment(ax, alignment, sample_rate)
    for _, start, _ in _segments(alignment, sample_rate):
        ax.axvline(start, color="k", lw=0.8)
    ax.set_yticks([])
    ax.set_xlim(0, len(units) * frame_hop_s)
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, pad=22)
    fig.tight_layout()
    return fig


def plot_training_curves(history: Sequence[dict], panels: Sequence[tuple[str, str, float | None]],
                         title: str = "") -> plt.Figure:
    """One panel per ``(metric key, label, reference line or None)`` against the update number.

    ``history`` is a list of metric records (:meth:`speechssl.engine.Trainer.fit`). The reference
    line (dashed) is where a model that learned nothing would sit, e.g. the chance loss.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 2.8), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, (key, label, ref) in zip(axes[0], panels):
        ax.plot(steps, [h.get(key, np.nan) for h in history], color="C0", lw=1.4)
        if ref is not None:
            ax.axhline(ref, color="C3", ls="--", lw=1, label=f"chance {ref:.3g}")
            ax.legend(fontsize=7)
        ax.set_xlabel("update")
        ax.set_title(label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_score_matrix(scores: np.ndarray, offset: int, title: str = "", xlabel: str = "target frame j",
                      ylabel: str = "context frame i", colorbar: str = "score",
                      positive_label: str | None = None) -> plt.Figure:
    """``scores[i, j]`` (e.g. ``h_k(c_i) . z_j``) with the positives ``j = i + offset`` marked by dots
    (legend ``positive_label``, by default "true future (j = i + offset)").

    A model that learned its task scores the marked cell of each row above most of the row.
    """
    scores = np.asarray(scores, dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    im = ax.imshow(scores, cmap="magma", aspect="auto", interpolation="nearest")
    i = np.arange(scores.shape[0])
    j = i + offset
    ok = j < scores.shape[1]
    label = positive_label if positive_label is not None else f"true future (j = i + {offset})"
    ax.plot(j[ok], i[ok], ".", color="cyan", ms=2.0, label=label)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label=colorbar, fraction=0.046)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_candidate_scores(scores: np.ndarray, labels: Sequence[str], positive: int = 0, title: str = "",
                          ylabel: str = "score") -> plt.Figure:
    """Bars of one prediction's scores against its candidates; the positive is drawn in red."""
    scores = np.asarray(scores, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 2.6))
    colors = ["C3" if i == positive else "C7" for i in range(len(scores))]
    ax.bar(range(len(scores)), scores, color=colors)
    ax.set_xticks(range(len(scores)), labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
