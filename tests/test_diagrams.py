"""Architecture diagrams drawn from the models' own forward passes (speechssl.diagrams)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from speechssl import diagrams  # noqa: E402
from speechssl.recipes import recipe  # noqa: E402


@pytest.mark.parametrize("name", ["wav2vec", "vq_wav2vec", "vq_wav2vec_kmeans", "wav2vec2", "wav2vec2_ctc_scratch"])
def test_every_box_shows_the_shape_its_part_produced(name):
    model = recipe(name, "tiny").build(**({"vocab": ["a", "b"]} if "ctc" in name else {}))
    boxes, arrows = diagrams._layout(model)
    keys = {b.key for b in boxes}
    assert all(a in keys and b in keys for a, b in arrows)
    state = torch.random.get_rng_state()
    shapes = diagrams.output_shapes(model, seconds=1.0)
    assert torch.equal(state, torch.random.get_rng_state())        # the chapter's random stream is untouched
    for box in boxes:
        if box.module:
            assert len(shapes[box.key]) == len(box.axes.split("×")), box
    frames = model.frame_lengths(torch.tensor([16000])).item() if hasattr(model, "frame_lengths") else None
    if frames is not None and "z" in shapes:
        assert frames in shapes["z"]                                  # the encoder's frame count for 1 s
    fig = diagrams.architecture(model, title=name)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("16000" in t for t in texts) and all(t.get_fontsize() >= 8 for t in fig.axes[0].texts)
    plt.close(fig)


def test_a_model_without_a_layout_is_a_clear_error():
    with pytest.raises(TypeError, match="no diagram for Linear"):
        diagrams.architecture(torch.nn.Linear(2, 2))
