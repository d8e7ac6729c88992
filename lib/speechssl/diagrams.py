"""Architecture diagrams drawn from a model's own forward pass.

Each box is a part of the model (encoder, quantizer, context network, head, loss); its label ends
with the shape of the tensor that part produced for one second of input, recorded by forward
hooks while the model computes its loss. The diagram therefore shows the model that was built,
at the scale it was built, not a drawing of the paper's.

    fig = architecture(model)        # any model of speechssl.models, in its chapter
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .models import VQWav2Vec, Wav2Vec, Wav2Vec2, Wav2Vec2CTC

__all__ = ["Box", "LAYOUTS", "architecture", "output_shapes"]


@dataclass(frozen=True)
class Box:
    key: str
    label: str
    module: str | None     # dotted path of the submodule whose output is shown; None: no tensor
    axes: str              # names of the output's axes, e.g. "B×T×C"
    col: float
    row: float
    kind: str = "net"      # net, quant, loss, data


# (boxes, arrows). Rows: 0 the main path, 1 the target path.
LAYOUTS: dict[type, tuple[list[Box], list[tuple[str, str]]]] = {
    Wav2Vec: ([Box("x", "waveform", None, "B×S", 0, 0, "data"),
               Box("z", "feature encoder (conv)", "encoder", "B×C×T", 1, 0),
               Box("c", "context network (conv)", "context", "B×C×T", 2, 0),
               Box("h", "step predictors h_k", "objective.predictors", "B×T×K×C", 3, 0),
               Box("L", "binary contrastive loss (Eq. 1)", None, "", 4, 0, "loss")],
              [("x", "z"), ("z", "c"), ("c", "h"), ("h", "L"), ("z", "L")]),
    VQWav2Vec: ([Box("x", "waveform", None, "B×S", 0, 0, "data"),
                 Box("z", "feature encoder (conv)", "encoder", "B×C×T", 1, 0),
                 Box("q", "quantizer (G groups of V)", "quantizer", "B×T×C", 2, 0, "quant"),
                 Box("c", "context network (conv)", "context", "B×C×T", 3, 0),
                 Box("h", "step predictors h_k", "objective.predictors", "B×T×K×C", 4, 0),
                 Box("L", "contrastive loss on ẑ", None, "", 5, 0, "loss")],
                [("x", "z"), ("z", "q"), ("q", "c"), ("c", "h"), ("h", "L"), ("q", "L")]),
    Wav2Vec2: ([Box("x", "waveform", None, "B×S", 0, 0, "data"),
                Box("z", "feature encoder (conv)", "feature_encoder", "B×C×T", 1, 0),
                Box("p", "projection + span mask", "post_extract_proj", "B×T×D", 2, 0),
                Box("c", "Transformer", "encoder", "B×T×D", 3, 0),
                Box("cp", "final projection", "final_proj", "M×F", 4, 0),
                Box("q", "quantizer (masked frames)", "quantizer", "1×M×F", 2, 1, "quant"),
                Box("qp", "target projection", "project_q", "M×F", 3, 1),
                Box("L", "InfoNCE + diversity + penalty", None, "", 5, 0.5, "loss")],
               [("x", "z"), ("z", "p"), ("p", "c"), ("c", "cp"), ("cp", "L"), ("z", "q"), ("q", "qp"),
                ("qp", "L")]),
    Wav2Vec2CTC: ([Box("x", "waveform", None, "B×S", 0, 0, "data"),
                Box("z", "feature encoder (frozen)", "encoder.feature_encoder", "B×C×T", 1, 0),
                Box("c", "Transformer (+ SpecAugment)", "encoder.encoder", "B×T×D", 2, 0),
                Box("y", "linear head: blank + phones", "head", "B×T×(1+V)", 3, 0),
                Box("L", "CTC loss", None, "", 4, 0, "loss")],
               [("x", "z"), ("z", "c"), ("c", "y"), ("y", "L")]),
}

_COLORS = {"net": "#dbe8f6", "quant": "#fde3c8", "loss": "#f6d5d5", "data": "#eeeeee"}


def _first_tensor(out) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    return getattr(out, "x", None) if isinstance(getattr(out, "x", None), torch.Tensor) else None


def _layout(model: torch.nn.Module):
    for cls in type(model).__mro__:      # VQWav2Vec before its base class Wav2Vec
        if cls in LAYOUTS:
            return LAYOUTS[cls]
    raise TypeError(f"architecture: no diagram for {type(model).__name__}; expected one of "
                    f"{', '.join(c.__name__ for c in LAYOUTS)}")


@torch.no_grad()
def output_shapes(model: torch.nn.Module, seconds: float = 1.0, sample_rate: int = 16000) -> dict[str, tuple]:
    """Shape of each laid-out part's output for one utterance of ``seconds`` (key -> shape)."""
    boxes, _ = _layout(model)
    samples = int(seconds * sample_rate)
    shapes: dict[str, tuple] = {"x": (1, samples)}
    hooks = []
    for box in boxes:
        if box.module:
            def hook(_m, _inp, out, key=box.key):
                t = _first_tensor(out)
                if t is not None:
                    shapes[key] = tuple(t.shape)
            hooks.append(model.get_submodule(box.module).register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng():      # the span mask draws from the global generator: seed it here only
            torch.manual_seed(0)
            audio = torch.randn(1, samples)
            lengths = torch.tensor([samples])
            if isinstance(model, Wav2Vec2CTC):       # its loss needs transcripts: the forward pass shows every part
                model(audio, lengths)
            elif isinstance(model, Wav2Vec2):        # compute_loss refuses 1 s (it wants room for 100 distractors)
                model.pretraining_loss(model(audio, lengths, mask=True))
            else:
                model.compute_loss({"audio": audio, "lengths": lengths})
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes


def architecture(model: torch.nn.Module, title: str = "", seconds: float = 1.0) -> plt.Figure:
    """Boxes and arrows of the model's parts, each with its output shape for ``seconds`` of audio."""
    boxes, arrows = _layout(model)
    shapes = output_shapes(model, seconds)
    width = max(b.col for b in boxes) + 1
    rows = max(b.row for b in boxes) + 1
    fig, ax = plt.subplots(figsize=(1.95 * width, 0.8 + 1.0 * rows))
    pos = {b.key: (b.col * 1.0, -b.row * 1.0) for b in boxes}
    for b in boxes:
        shape = shapes.get(b.key)
        if b.module and shape is not None and len(shape) != len(b.axes.split("×")):
            raise ValueError(f"architecture: {b.module} produced a {len(shape)}-d output, the layout names "
                             f"axes {b.axes}")
        text = textwrap.fill(b.label, 20)
        if shape is not None:
            text += f"\n{b.axes} = {'×'.join(str(s) for s in shape)}"
        x, y = pos[b.key]
        ax.add_patch(FancyBboxPatch((x - 0.44, y - 0.3), 0.88, 0.6, boxstyle="round,pad=0.02",
                                    fc=_COLORS[b.kind], ec="#555555", lw=0.8))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)
    for a, b in arrows:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        if y0 == y1 and x1 - x0 > 1:             # a skip over boxes of the same row: an arc above them
            start, end, style = (x0, y0 + 0.3), (x1 - 0.15, y1 + 0.3), "arc3,rad=-0.12"
        elif y0 == y1:
            start, end, style = (x0 + 0.44, y0), (x1 - 0.44, y1), "arc3,rad=0.0"
        elif x1 > x0:
            start, end, style = (x0 + 0.44, y0), (x1 - 0.44, y1), "arc3,rad=-0.15"
        else:
            start, end, style = (x0, y0 - 0.3), (x1, y1 + 0.3), "arc3,rad=0.0"
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, lw=0.9, color="#444444",
                                     connectionstyle=style))
    skips = any(pos[a][1] == pos[b][1] and pos[b][0] - pos[a][0] > 1 for a, b in arrows)
    ax.set_xlim(-0.55, width - 0.45)
    ax.set_ylim(-rows + 0.6, 1.0 if skips else 0.4)
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
