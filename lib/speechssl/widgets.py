"""Interactive explorations that also leave a static figure for the HTML book.

The book is static HTML without a live kernel, so an ipywidgets control alone would show
nothing there. :func:`explore` first draws the figure for the default values (stored in the
notebook, rendered in the book), then shows the live controls for readers running the
notebook in Jupyter or Colab.
"""

from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
from IPython.display import display


def explore(draw: Callable[..., plt.Figure], defaults: dict, controls: dict):
    """Show ``draw(**defaults)`` as a static figure, then live widgets bound to ``draw``.

    ``controls`` maps each argument of ``draw`` to an ipywidgets control (or anything
    ``ipywidgets.interactive`` accepts); their initial values should equal ``defaults``.
    Returns the interactive widget.
    """
    import ipywidgets

    fig = draw(**defaults)
    display(fig)
    plt.close(fig)

    def show(**kwargs):
        f = draw(**kwargs)
        display(f)
        plt.close(f)

    ui = ipywidgets.interactive(show, {"manual": False}, **controls)
    ui.children[-1].clear_output()
    display(ipywidgets.HTML("<b>Live controls</b> (need a running kernel):"), ui)
    return ui
