"""Figures and tables shared by the chapters.

``setup_plots`` sets the book's figure style: text of at least 8 pt, and PNGs stored at twice the
displayed resolution (``retina``), so that labels stay sharp in the HTML book.
:class:`Table` now lives in :mod:`speechssl.report` (imported here for existing code).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .report import Table  # noqa: F401  (moved to speechssl.report; kept here for existing imports)


MIN_FONT = 8   # points; the smallest text any figure of the book uses


def setup_plots(dpi: int = 80) -> None:
    """Figures at ``dpi`` on the page, stored at twice that (the PNGs are kept in the notebooks)."""
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": 2 * dpi, "figure.figsize": (9, 3.2),
                         "axes.grid": False, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
                         "xtick.labelsize": MIN_FONT, "ytick.labelsize": MIN_FONT, "legend.fontsize": MIN_FONT,
                         "figure.titlesize": 10})
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # pragma: no cover - Jupyter is part of the environment
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")     # PNG at 2x figure.dpi, displayed at 1x


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
    ax.xaxis.set_minor_formatter(plt.NullFormatter())     # only the K values are named, no 6x10^1 in between
    ax.set_xlabel("number of clusters K")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=MIN_FONT, ncol=2, loc="upper left")
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
    return _probability_map(cond[:, order], (10, max(4.0, 1.2 + 0.13 * len(phones))),   # one 8 pt label per row
                            phones, None, "phone", xlabel, "p(phone | unit)", title, aspect="auto", fraction=0.03)


def _probability_map(cond: np.ndarray, size: tuple[float, float], rows: Sequence[str], columns: Sequence[str] | None,
                     ylabel: str, xlabel: str, label: str, title: str, **kwargs) -> plt.Figure:
    """A heatmap of probabilities in [0, 1], one 8 pt label per row (and per column when named)."""
    fig, ax = plt.subplots(figsize=size)
    im = ax.imshow(cond, cmap="Blues", vmin=0, vmax=1, interpolation="nearest", aspect=kwargs.get("aspect", "equal"))
    ax.set_yticks(range(len(rows)), rows, fontsize=MIN_FONT)
    if columns is not None:
        ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=MIN_FONT)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label=label, fraction=kwargs.get("fraction", 0.04))
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
            if (i - run_start) * frame_hop_s >= 0.04:
                ax.text((t[run_start] + i * frame_hop_s) / 2, 0.5, str(units[run_start]), ha="center",
                        va="center", fontsize=MIN_FONT, rotation=90)
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
            ax.legend(fontsize=MIN_FONT)
        ax.set_xlabel("update")
        ax.set_title(label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_score_matrix(scores: np.ndarray, offset: int, title: str = "", xlabel: str = "target frame j",
                      ylabel: str = "context frame i", colorbar: str = "score",
                      positive_label: str | None = None, phones: Sequence[str] | None = None) -> plt.Figure:
    """``scores[i, j]`` (e.g. ``h_k(c_i) . z_j``) with the positives ``j = i + offset`` marked by dots
    (legend ``positive_label``, by default "true future (j = i + offset)").

    ``phones``: the phone under each frame (rows and columns index the same frames); phone
    boundaries are drawn across the matrix and each phone of two frames or more is named on the axes.
    A model that learned its task scores the marked cell of each row above most of the row.
    """
    scores = np.asarray(scores, dtype=float)
    fig, ax = plt.subplots(figsize=(6.0, 5.0) if phones is not None else (5.2, 4.2))
    im = ax.imshow(scores, cmap="magma", aspect="auto", interpolation="nearest")
    i = np.arange(scores.shape[0])
    j = i + offset
    ok = j < scores.shape[1]
    label = positive_label if positive_label is not None else f"true future (j = i + {offset})"
    ax.plot(j[ok], i[ok], ".", color="cyan", ms=2.0, label=label)
    ax.legend(fontsize=MIN_FONT, loc="lower left")
    if phones is not None:
        if len(phones) != max(scores.shape):
            raise ValueError(f"phones: expected one phone per frame ({max(scores.shape)}), found {len(phones)}")
        bounds = [k for k in range(1, len(phones)) if phones[k] != phones[k - 1]]
        for b in bounds:
            ax.axvline(b - 0.5, color="white", lw=0.5, alpha=0.8)
            ax.axhline(b - 0.5, color="white", lw=0.5, alpha=0.8)
        edges = [0, *bounds, len(phones)]
        named = [(a, b) for a, b in zip(edges, edges[1:]) if b - a >= 2]
        centres, names = [(a + b - 1) / 2 for a, b in named], [phones[a] for a, _ in named]
        ax.set_xticks(centres, names, fontsize=MIN_FONT, rotation=90)
        ax.set_yticks(centres, names, fontsize=MIN_FONT)
        ax.set_xlim(-0.5, scores.shape[1] - 0.5)
        ax.set_ylim(scores.shape[0] - 0.5, -0.5)
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
    ax.set_xticks(range(len(scores)), labels, fontsize=MIN_FONT, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_code_pairs(codes: np.ndarray, num_vars: int, title: str = "", ax=None) -> plt.Figure:
    """How often each (group 1 entry, group 2 entry) pair is a frame's unit: ``codes`` ``(N, 2)``, log counts."""
    codes = np.asarray(codes)
    grid = np.zeros((num_vars, num_vars))
    np.add.at(grid, (codes[:, 0], codes[:, 1]), 1)
    fig = ax.figure if ax is not None else plt.subplots(figsize=(5, 4.2))[0]
    ax = ax if ax is not None else fig.axes[0]
    im = ax.imshow(np.log10(1 + grid), cmap="viridis", interpolation="nearest")
    ax.set_xlabel("group 2 entry")
    ax.set_ylabel("group 1 entry")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, label="log10(1 + frames)", fraction=0.046)
    return fig


def plot_umap(views: dict, phones: np.ndarray, names: Sequence[str], *, n_points: int = 1500, top: int = 10,
              seed: int = 0) -> plt.Figure:
    """UMAP (McInnes et al. 2018) of the same frames under several representations, coloured by the ``top``
    most frequent phones (grey: the others). ``views`` maps a panel title to ``(N, D)`` features; the
    vectors are L2-normalised first (the models compare them by cosine)."""
    import umap
    import torch

    phones = np.asarray(phones)
    pick = np.random.default_rng(seed).choice(len(phones), size=min(n_points, len(phones)), replace=False)
    lab = phones[pick]
    common = np.bincount(lab, minlength=len(names)).argsort()[::-1][:top]
    fig, axes = plt.subplots(1, len(views), figsize=(5.5 * len(views), 4.6))
    for ax, (title, feats) in zip(np.atleast_1d(axes), views.items()):
        x = torch.nn.functional.normalize(torch.as_tensor(np.asarray(feats)[pick]).float(), dim=-1).numpy()
        xy = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=seed, n_jobs=1).fit_transform(x)
        other = ~np.isin(lab, common)
        ax.scatter(xy[other, 0], xy[other, 1], s=3, c="lightgrey")
        for k, ph in enumerate(common):
            sel = lab == ph
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=plt.cm.tab10(k), label=names[ph])
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[-1].legend(fontsize=8, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def plot_posteriogram(probs: np.ndarray, vocab: Sequence[str], alignment, hop_s: float = 0.02,
                      offset_s: float = 0.0125) -> plt.Figure:
    """CTC output of one utterance: the blank's probability (grey) and, at each frame whose most likely output is
    a symbol, that symbol's probability and name, under the reference alignment. ``probs`` ``(T, 1 + V)``."""
    best = probs.argmax(-1)
    t = np.arange(len(best)) * hop_s + offset_s
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(t, probs[:, 0], color="lightgrey", lw=1, label="blank")
    for f in np.flatnonzero(best != 0):
        ax.vlines(t[f], 0, probs[f, best[f]], color="C0", lw=2)
        ax.text(t[f], probs[f, best[f]] + 0.02, vocab[best[f] - 1], fontsize=8, ha="center")
    draw_alignment(ax, alignment)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.legend(loc="lower right")
    return fig


def plot_ctc_lattice(alpha: np.ndarray, states: Sequence[str], title: str = "") -> plt.Figure:
    """CTC's forward lattice (:func:`speechssl.decoding.ctc_forward`): one column per frame, one row per state of
    the extended target ``(-, l_1, -, ..., l_U, -)``. Each node is shaded by ``alpha[t, s]`` normalised over its
    frame; arrows are the allowed moves (stay, advance one state, skip a blank between different labels); the
    two end states of the last frame, whose sum is ``p(l | x)``, are ringed."""
    alpha = np.asarray(alpha, dtype=float)
    num_frames, num_states = alpha.shape
    post = np.exp(alpha - alpha.max(1, keepdims=True))
    post = np.where(np.isfinite(alpha), post / post.sum(1, keepdims=True), 0.0)
    fig, ax = plt.subplots(figsize=(1.8 + 1.2 * num_frames, 1.4 + 0.6 * num_states))
    reachable = np.isfinite(alpha)
    for t in range(num_frames - 1):
        for s in range(num_states):
            if not reachable[t, s]:
                continue
            moves = [s, s + 1] + ([s + 2] if s + 2 < num_states and states[s + 2] != "-"
                                  and states[s + 2] != states[s] else [])
            for s2 in moves:
                if s2 < num_states and reachable[t + 1, s2]:
                    ax.annotate("", (t + 1, s2), (t, s), arrowprops=dict(arrowstyle="-|>", color="#9a9a9a", lw=0.7,
                                                                          shrinkA=7, shrinkB=7))
    tt, ss = np.meshgrid(np.arange(num_frames), np.arange(num_states), indexing="ij")
    sc = ax.scatter(tt[reachable], ss[reachable], c=post[reachable], cmap="Blues", vmin=0, vmax=1, s=170,
                    edgecolors="#333333", linewidths=0.6, zorder=3)
    ax.scatter(tt[~reachable], ss[~reachable], s=30, color="#dddddd", zorder=2)
    ax.scatter([num_frames - 1] * 2, [num_states - 2, num_states - 1], s=330, facecolors="none",
               edgecolors="C3", linewidths=1.4, zorder=4, label="end states: p(l | x) = their sum")
    ax.set_yticks(range(num_states), states, fontsize=MIN_FONT + 1)
    ax.set_xticks(range(num_frames), [str(t + 1) for t in range(num_frames)])
    ax.set_ylim(num_states - 0.5, -0.5)
    ax.set_xlim(-0.5, num_frames - 0.5)
    ax.set_xlabel("frame t")
    ax.set_ylabel("state s of the extended target")
    fig.colorbar(sc, ax=ax, label="alpha_t(s), normalised per frame", fraction=0.04)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_segmentation(alignment, clusters: np.ndarray, boundaries: Sequence[int], kept: Sequence[tuple[int, int]],
                      num_samples: int, *, hop: int = 320, window: int = 400, sample_rate: int = 16000,
                      title: str = "") -> plt.Figure:
    """wav2vec-U's segmentation of one utterance under its phone alignment: the k-means cluster of every
    voiced frame (coloured cells), removed silence (grey), segment boundaries (red) and phone boundaries
    (black, phones named above)."""
    from .segmentation import to_original

    clusters = np.asarray(clusters)
    fig, ax = plt.subplots(figsize=(10, 2.3))
    cmap = plt.get_cmap("tab20")
    starts = np.asarray(to_original([i * hop + (window - hop) // 2 for i in range(len(clusters))], kept)) / sample_rate
    ax.bar(starts, np.full(len(starts), 0.5), width=hop / sample_rate, bottom=0.5, align="edge",
           color=[cmap(c % 20) for c in clusters], lw=0)
    gaps = [(0, kept[0][0])] + [(b, a) for (_, b), (a, _) in zip(kept, kept[1:])] + [(kept[-1][1], num_samples)] \
        if kept else []
    for i, (a, b) in enumerate(gaps):
        if b > a:
            ax.axvspan(a / sample_rate, b / sample_rate, color="0.85", lw=0, label="removed as silence" if i == 0 else None)
    for i, b in enumerate(boundaries):
        ax.plot([b / sample_rate] * 2, [0, 0.5], color="C3", lw=1.2, label="segment boundary" if i == 0 else None)
    draw_alignment(ax, alignment, sample_rate)
    for _, s, _ in alignment:
        ax.plot([s / sample_rate] * 2, [0, 1], color="k", lw=0.8)
    ax.set_xlim(0, num_samples / sample_rate)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.75], ["segments", "clusters"])
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, -0.25), ncol=2, fontsize=MIN_FONT, frameon=False)
    if title:
        ax.set_title(title, pad=22)
    fig.tight_layout()
    return fig


def plot_gan_history(histories: Sequence[Sequence[dict]], panels: Sequence[tuple[str, str]], title: str = ""
                     ) -> plt.Figure:
    """One panel per ``(key, label)`` of GAN evaluations (``update`` on x), one line per seed."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for h in histories:
            pts = [(p["update"], p[key]) for p in h if p.get(key) is not None]
            ax.plot(*zip(*pts), lw=1.2, marker=".", label=f"seed {h[0]['seed']}")
        ax.set_xlabel("update")
        ax.set_title(label)
    axes[0][0].legend(fontsize=MIN_FONT)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_selection(histories: Sequence[Sequence[dict]], selected: dict, title: str = "") -> plt.Figure:
    """The unsupervised metric against dev PER, one point per evaluation, one colour per seed; the selected
    checkpoint ringed. PER is only drawn here, never used to choose."""
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for h in histories:
        ax.scatter([p["weighted_lm_ppl"] for p in h], [p["dev_per"] for p in h], s=18, label=f"seed {h[0]['seed']}")
    ax.scatter([selected["weighted_lm_ppl"]], [selected["dev_per"]], s=120, facecolors="none", edgecolors="k",
               label="selected")
    ax.set_xscale("log")
    ax.set_xlabel("weighted LM perplexity (lower is better)")
    ax.set_ylabel("dev PER")
    ax.legend(fontsize=MIN_FONT)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_confusion(counts: np.ndarray, symbols: Sequence[str], title: str = "") -> plt.Figure:
    """p(generated phone | true phone) over aligned pairs, rows the true phones."""
    counts = np.asarray(counts, dtype=float)
    cond = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    return _probability_map(cond, (7.5, 6.8), symbols, symbols, "true phone", "generated phone", "p(generated | true)",
                            title)
