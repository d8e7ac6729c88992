"""vq-wav2vec: units, losses of both quantizers, parameter counts by hand, registry and errors."""

import pytest
import torch

from speechssl.errors import AudioError, ConfigError
from speechssl.recipes import recipe
from speechssl.models.vq_wav2vec import VQWav2Vec, VQWav2VecConfig


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_paper_parameter_counts_by_hand():
    encoder = (1 * 512 * 10 + 512 * 512 * 8 + 3 * 512 * 512 * 4 + 3 * 512 * 512) + 8 * 2 * 512   # 6,042,624
    context = sum(512 * 512 * k + 512 for k in range(2, 14)) + 12 * 2 * 512                      # 23,611,392
    predictors = 8 * (512 * 512 + 512)                                                          # K = 8
    gumbel = (320 * 256                      # one shared codebook of 320 entries of 512 / 2 dims
              + 512 * 1024 + 1024            # linear ...
              + 1024 * 640 + 640)            # ... ReLU, linear to G * V = 640 logits
    kmeans = (320 * 256                      # shared codebook
              + 512 * 256                    # grouped 1x1 projection (2 groups), no bias
              + 2 * 512)                     # group norm
    g = VQWav2Vec(VQWav2VecConfig.preset("paper"))
    k = VQWav2Vec(VQWav2VecConfig.preset("paper", quantizer="kmeans"))
    assert n_params(g.encoder) == encoder == 6_042_624
    assert n_params(g.context) == context == 23_611_392
    assert n_params(g.quantizer) == gumbel and n_params(k.quantizer) == kmeans
    assert n_params(g) == encoder + gumbel + context + predictors == 33_018_496
    assert n_params(k) == encoder + kmeans + context + predictors == 31_969_280
    assert g.num_codewords == 320 ** 2 == 102_400
    assert g.cfg.loss == "binary" and g.cfg.prediction_steps == 8 and g.cfg.predictor_lr_scale == 1.0


@pytest.mark.parametrize("quantizer", ["gumbel", "kmeans"])
def test_units_are_deterministic_and_padded_with_minus_one(quantizer):
    torch.manual_seed(0)
    m = VQWav2Vec(VQWav2VecConfig.preset("tiny", quantizer=quantizer))
    audio = torch.randn(2, 5000)
    lengths = torch.tensor([5000, 3000])
    m.train()                                   # units() ignores the mode: no Gumbel noise
    u1 = m.units(audio, lengths)
    m.eval()
    u2 = m.units(audio, lengths)
    frames = m.frame_lengths(lengths).tolist()
    assert u1.shape == (2, frames[0], 2) and u1.dtype == torch.int64
    assert torch.equal(u1, u2)
    assert torch.all(u1[1, frames[1]:] == -1) and torch.all(u1[1, : frames[1]] >= 0)
    assert int(u1.max()) < m.cfg.num_vars
    ids = m.unit_ids(u1)
    assert ids.shape == (2, frames[0]) and torch.all(ids[1, frames[1]:] == -1)
    assert torch.equal(ids[0], u1[0, :, 0] * m.cfg.num_vars + u1[0, :, 1])


def test_gumbel_training_step_metrics_and_temperature():
    torch.manual_seed(0)
    m = VQWav2Vec(VQWav2VecConfig.preset("tiny", anneal_updates=100))
    batch = {"audio": torch.randn(2, 6000), "lengths": torch.tensor([6000, 4000])}
    loss, metrics = m.compute_loss(batch, num_updates=35)
    assert metrics["temp"] == pytest.approx(2.0 - 1.5 * 0.35)
    assert {"acc", "code_ppl", "prob_ppl", "contrastive_loss"} <= set(metrics)
    assert 1.0 <= float(metrics["code_ppl"]) <= 2 * m.cfg.num_vars
    assert float(loss.detach()) == pytest.approx(float(metrics["contrastive_loss"]))   # no extra loss for Gumbel
    loss.backward()
    assert m.quantizer.codebook.grad.abs().sum() > 0                           # straight-through to the codebook
    assert m.encoder.blocks[0].conv.weight.grad.abs().sum() > 0                # ... and on to the encoder
    assert m.compute_loss(batch, num_updates=10_000)[1]["temp"] == pytest.approx(0.5)


def test_kmeans_training_step_adds_the_vq_loss():
    torch.manual_seed(0)
    m = VQWav2Vec(VQWav2VecConfig.preset("tiny", quantizer="kmeans"))
    loss, metrics = m.compute_loss({"audio": torch.randn(2, 6000)}, 0)
    assert "vq_loss" in metrics and "temp" not in metrics
    assert float(loss.detach()) == pytest.approx(float(metrics["contrastive_loss"]) + float(metrics["vq_loss"]), rel=1e-5)
    loss.backward()
    assert m.quantizer.codebook.grad.abs().sum() > 0
    assert m.encoder.blocks[0].conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("groups, combine", [(1, False), (2, False), (2, True), (4, True)])
def test_groups_and_combine_groups(groups, combine):
    m = VQWav2Vec(VQWav2VecConfig.preset("tiny", groups=groups, combine_groups=combine, num_vars=8))
    assert m.quantizer.codebook.shape[0] == (8 if combine else 8 * groups)
    u = m.units(torch.randn(1, 3000))
    assert u.shape[-1] == groups and m.num_codewords == 8 ** groups


def test_recipes_scales_and_annealing_follow_the_updates():
    for name in ("vq_wav2vec", "vq_wav2vec_kmeans"):
        for scale in ("tiny", "reduced", "full"):
            r = recipe(name, scale)
            assert r.train.schedule == "cosine"
            assert r.model.quantizer == ("gumbel" if name == "vq_wav2vec" else "kmeans")
            assert r.model.anneal_updates == round(0.7 * r.train.max_steps)          # Sec. 5.2: 70% of the updates
        full = recipe(name, "full").train
        assert (full.lr, full.warmup_steps, full.min_lr, full.max_steps, full.crop_samples) == \
            (5e-3, 500, 1e-6, 400_000, 150_000)
    assert isinstance(recipe("vq_wav2vec_kmeans", "tiny").build(), VQWav2Vec)


def test_errors():
    m = VQWav2Vec(VQWav2VecConfig.preset("tiny"))
    with pytest.raises(AudioError, match="needs at least 2065 samples"):     # 11 frames: a target and 10 distractors
        m.compute_loss({"audio": torch.randn(1, 400)}, 0)
    with pytest.raises(AudioError, match="needs at least 465 samples .one frame"):
        m.units(torch.randn(1, 400))
    with pytest.raises(AudioError, match="needs at least 2065 samples"):
        m.compute_loss({"audio": torch.randn(1, 465 + 3 * 160)}, 0)
    with pytest.raises(ConfigError, match="empty batch"):
        m.compute_loss({"audio": torch.zeros(0, 100)}, 0)


@pytest.mark.parametrize("kwargs, field", [
    ({"num_vars": 1}, "num_vars"),
    ({"groups": 0}, "groups"),
    ({"groups": 3}, "groups"),
    ({"quantizer": "rvq"}, "quantizer"),
    ({"max_temp": 0.2}, "max_temp"),
    ({"anneal_updates": -1}, "anneal_updates"),
    ({"kmeans_gamma": -0.25}, "kmeans_gamma"),
    ({"prediction_steps": 0}, "prediction_steps"),
])
def test_invalid_configs(kwargs, field):
    with pytest.raises(ConfigError, match=rf"VQWav2VecConfig\.{field}"):
        VQWav2VecConfig(**kwargs)
