"""Tables, figures, widgets and path/scale settings used by the chapters."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from speechssl import paths  # noqa: E402
from speechssl.errors import ConfigError  # noqa: E402
from speechssl.viz import (Table, plot_candidate_scores, plot_cooccurrence, plot_phone_histogram,  # noqa: E402
                           plot_quality_vs_k, plot_score_matrix, plot_training_curves, plot_units_against_phones,
                           plot_utterance)


def test_table_text_and_markdown():
    t = Table(["K", "PNMI"], [(100, 0.25612), (500, float("nan"))], caption="cap")
    assert repr(t).splitlines() == ["cap", "K    PNMI", "---  -----", "100  0.256", "500  –"]
    md = t._repr_markdown_()
    assert "| K | PNMI |" in md and "| 100 | 0.256 |" in md and md.startswith("**cap**")
    with pytest.raises(ValueError, match="expected 2"):
        Table(["a", "b"], [(1,)])


def test_scale_and_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("SPEECHSSL_SCALE", raising=False)
    assert paths.scale() == "tiny"
    monkeypatch.setenv("SPEECHSSL_SCALE", "Reduced")
    assert paths.scale() == "reduced"
    monkeypatch.setenv("SPEECHSSL_SCALE", "huge")
    with pytest.raises(ConfigError, match="one of .*found 'huge'"):
        paths.scale()
    monkeypatch.setenv("SPEECHSSL_DATA", str(tmp_path))
    assert paths.corpus_dir("tiny") == tmp_path / "synth-tiny"
    monkeypatch.delenv("SPEECHSSL_DATA")
    assert paths.corpus_dir("tiny") == paths.repo_root() / "data" / "synth-tiny"


def test_figures_draw():
    rng = np.random.default_rng(0)
    ali = [("sil", 0, 1600), ("HH", 1600, 2400), ("AH", 2400, 4000), ("sil", 4000, 4800)]
    figs = [
        plot_utterance(rng.normal(size=4800), ali, rng.normal(size=(28, 257)), rng.normal(size=(28, 39))),
        plot_phone_histogram(np.array([5, 0, 3]), ["sil", "AA", "AE"]),
        plot_quality_vs_k([50, 100], [dict(phone_purity=.3, cluster_purity=.2, pnmi=.2)] * 2,
                          paper={100: dict(phone_purity=.3, cluster_purity=.2, pnmi=.25)}),
        plot_cooccurrence(np.array([[3, 0, 1], [0, 2, 0]]), ["sil", "AA"]),
        plot_units_against_phones(ali, rng.integers(0, 5, 28), 0.01),
        plot_training_curves([{"step": 10, "loss": 3.0, "acc": 0.1}, {"step": 20, "loss": 2.5}],
                             [("loss", "loss", 3.35), ("acc", "accuracy", None)]),
        plot_score_matrix(rng.normal(size=(6, 8)), offset=1),
        plot_candidate_scores(rng.random(11), [f"z{i}" for i in range(11)]),
    ]
    assert all(len(f.axes) >= 1 for f in figs)
    assert len(figs[-3].axes) == 2                                   # one panel per metric
    # the positives j = i + offset are marked, and only inside the matrix
    marks = figs[-2].axes[0].lines[0]
    assert list(marks.get_xdata()) == [1, 2, 3, 4, 5, 6] and list(marks.get_ydata()) == [0, 1, 2, 3, 4, 5]


def _texts(fig):
    """Every visible text of a figure: titles, labels, tick labels, legends, annotations."""
    fig.canvas.draw()
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]


def test_figures_use_no_text_below_8_points_and_store_twice_the_resolution():
    import matplotlib.pyplot as plt

    from speechssl.viz import MIN_FONT, plot_ctc_lattice, plot_posteriogram, setup_plots
    setup_plots()
    assert plt.rcParams["savefig.dpi"] == 2 * plt.rcParams["figure.dpi"]
    rng = np.random.default_rng(0)
    ali = [("sil", 0, 1600), ("HH", 1600, 2400), ("AH", 2400, 4000), ("sil", 4000, 4800)]
    phones = ["sil", "sil", "HH", "HH", "HH", "AH", "AH", "sil"]
    figs = [
        plot_utterance(rng.normal(size=4800), ali, rng.normal(size=(28, 257)), rng.normal(size=(28, 39))),
        plot_phone_histogram(np.array([5, 0, 3]), ["sil", "AA", "AE"]),
        plot_quality_vs_k([50, 100], [dict(phone_purity=.3, cluster_purity=.2, pnmi=.2)] * 2,
                          paper={100: dict(phone_purity=.3, cluster_purity=.2, pnmi=.25)}),
        plot_cooccurrence(rng.integers(0, 5, (40, 60)), [f"p{i}" for i in range(40)]),
        plot_units_against_phones(ali, rng.integers(0, 5, 28), 0.01),
        plot_training_curves([{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.5}], [("loss", "loss", 3.35)]),
        plot_score_matrix(rng.normal(size=(8, 8)), offset=0, phones=phones),
        plot_candidate_scores(rng.random(11), [f"z{i}" for i in range(11)]),
        plot_ctc_lattice(np.log(rng.random((5, 5))), ["-", "a", "-", "b", "-"]),
        plot_posteriogram(rng.dirichlet(np.ones(3), 20), ["a", "b"], ali),
    ]
    for fig in figs:
        small = [(t.get_text(), t.get_fontsize()) for t in _texts(fig) if t.get_fontsize() < MIN_FONT]
        assert small == [], small
        plt.close(fig)


def test_score_matrix_draws_phone_boundaries_and_names_phones():
    phones = ["sil", "sil", "HH", "HH", "HH", "AH", "AH", "sil"]
    fig = plot_score_matrix(np.zeros((8, 8)), offset=0, phones=phones)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sil", "HH", "AH"]   # the last 1-frame sil unnamed
    assert sum(1 for line in ax.lines if line.get_xdata()[0] == line.get_xdata()[-1]) == 3   # 3 boundaries
    with pytest.raises(ValueError, match="one phone per frame"):
        plot_score_matrix(np.zeros((8, 8)), offset=0, phones=phones[:5])


def test_explore_leaves_a_static_figure(monkeypatch):
    import ipywidgets
    import matplotlib.pyplot as plt

    from speechssl import widgets

    shown = []
    monkeypatch.setattr(widgets, "display", lambda *objs: shown.extend(objs))
    calls = []

    def draw(k=1):
        calls.append(k)
        fig, ax = plt.subplots()
        ax.plot([0, k])
        return fig

    ui = widgets.explore(draw, {"k": 2}, {"k": ipywidgets.IntSlider(min=1, max=3, value=2)})
    assert calls[0] == 2 and isinstance(shown[0], plt.Figure)
    assert isinstance(ui, ipywidgets.interactive) and ui in shown


def test_log_axis_names_only_the_ks():
    fig = plot_quality_vs_k([50, 100, 200, 500], [dict(phone_purity=.3, cluster_purity=.2, pnmi=.2)] * 4)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50", "100", "200", "500"]
    assert all(t.get_text() == "" for t in ax.xaxis.get_minorticklabels())
