"""wav2vec: shapes, parameter counts by hand, the training contract and its errors."""

import pytest
import torch

from speechssl.errors import AudioError, ConfigError
from speechssl.recipes import recipe
from speechssl.models.wav2vec import StepPredictors, Wav2Vec, Wav2VecConfig


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def conv(c_in, c_out, k, bias):
    return c_in * c_out * k + (c_out if bias else 0)


def hand_count(enc, ctx, steps, skip=False):
    """Encoder convs without bias, context convs with bias, an affine group norm (2 C) after every conv,
    residual 1x1 projections where the width changes, and K affine maps C_ctx -> C_enc."""
    total, c_in = 0, 1
    for c, k, _ in enc:
        total += conv(c_in, c, k, bias=False) + 2 * c
        c_in = c
    d = c_in
    for c, k in ctx:
        total += conv(c_in, c, k, bias=True) + 2 * c + (c_in * c if skip and c_in != c else 0)
        c_in = c
    return total + steps * (c_in * d + d)


def test_paper_parameter_count_by_hand():
    m = Wav2Vec(Wav2VecConfig.preset("paper"))
    encoder = (1 * 512 * 10 + 512 * 512 * 8 + 3 * 512 * 512 * 4) + 5 * 2 * 512      # 5,253,120
    context = 9 * (512 * 512 * 3 + 512) + 9 * 2 * 512                                # 7,091,712
    predictors = 12 * (512 * 512 + 512)                                              # 3,151,872
    assert n_params(m.encoder) == encoder == 5_253_120
    assert n_params(m.context) == context == 7_091_712
    assert n_params(m.objective) == predictors == 3_151_872
    assert n_params(m) == 15_496_704


def test_large_parameter_count_matches_the_released_32_5m():
    m = Wav2Vec(Wav2VecConfig.preset("large"))
    encoder = (1 * 512 * 10 + 512 * 512 * 8 + 3 * 512 * 512 * 4 + 2 * 512 * 512) + 7 * 2 * 512
    context = sum(512 * 512 * k + 512 for k in range(2, 14)) + 12 * 2 * 512
    predictors = 12 * (512 * 512 + 512)
    assert n_params(m) == encoder + context + predictors == 32_542_720
    # fairseq shares one bias between the K maps (ConvTranspose2d): 11 * 512 fewer, 32,537,088 = "32.5M"
    assert n_params(m) - 11 * 512 == 32_537_088


@pytest.mark.parametrize("preset", ["tiny", "reduced", "paper", "large"])
def test_every_preset_parameter_count_by_hand(preset):
    cfg = Wav2VecConfig.preset(preset)
    assert n_params(Wav2Vec(cfg)) == hand_count(cfg.encoder_layers, cfg.context_layers, cfg.prediction_steps,
                                                cfg.context_skip)


def test_shapes_and_frame_lengths():
    torch.manual_seed(0)
    m = Wav2Vec(Wav2VecConfig.preset("tiny"))
    assert m.receptive_field == 465 and m.hop == 160
    out = m(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert out.lengths.tolist() == [1 + (16000 - 465) // 160, 1 + (8000 - 465) // 160] == [98, 48]
    d = m.cfg.encoder_dim
    assert out.z.shape == (2, 98, d) and out.c.shape == (2, 98, m.cfg.context_dim)
    assert torch.all(out.c[1, 48:] == 0)
    feats, lengths = m.extract_features(torch.randn(1, 4000))
    assert feats.shape == (1, 23, m.cfg.context_dim) and lengths.tolist() == [23]


def test_an_utterance_gives_the_same_features_alone_and_in_a_padded_batch():
    torch.manual_seed(0)
    m = Wav2Vec(Wav2VecConfig.preset("tiny")).eval()
    a, b = torch.randn(6000), torch.randn(3500)
    batch = torch.zeros(2, 6000)
    batch[0], batch[1, :3500] = a, b
    both = m(batch, torch.tensor([6000, 3500]))
    alone = m(b[None], torch.tensor([3500]))
    n = int(alone.lengths[0])
    torch.testing.assert_close(both.c[1, :n], alone.c[0], atol=1e-5, rtol=1e-4)


def test_step_predictors_are_independent_affine_maps():
    p = StepPredictors(6, 4, 3, lr_scale=30.0)
    c = torch.randn(2, 5, 6)
    h = p(c)
    assert h.shape == (2, 5, 3, 4)
    w, b = p.weight.view(3, 4, 6), p.bias.view(3, 4)
    for k in range(3):
        torch.testing.assert_close(h[:, :, k], c @ w[k].t() + b[k])
    bound = 1 / (4 * 3) ** 0.5                     # fairseq ConvTranspose2d init, whatever the scale
    assert float(p.weight.detach().abs().max()) <= bound


def test_compute_loss_contract():
    torch.manual_seed(0)
    m = Wav2Vec(Wav2VecConfig.preset("tiny"))
    batch = {"audio": torch.randn(2, 8000), "lengths": torch.tensor([8000, 6000]),
             "padding_mask": torch.arange(8000)[None] >= torch.tensor([[8000], [6000]])}
    loss, metrics = m.compute_loss(batch, num_updates=0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {"acc", "num_positives"} <= set(metrics)
    assert [f"acc_step{k}" for k in range(1, 13)] == [k for k in metrics if k.startswith("acc_step")]
    assert 0.0 <= float(metrics["acc"]) <= 1.0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    # lengths can also come from the padding mask alone
    del batch["lengths"]
    loss2, _ = m.compute_loss(batch, 0)
    assert torch.isfinite(loss2)
    assert m.chance_loss == pytest.approx(3.351, abs=1e-3) and m.chance_accuracy == pytest.approx(1 / 11)


def test_recipes():
    assert isinstance(recipe("wav2vec", "tiny").build(), Wav2Vec)
    for scale in ("tiny", "reduced", "full"):
        assert recipe("wav2vec", scale).train.schedule == "cosine"
    full = recipe("wav2vec", "full").train
    assert (full.lr, full.warmup_steps, full.min_lr, full.max_steps, full.crop_samples) == \
        (5e-3, 500, 1e-6, 400_000, 150_000)
    assert recipe("wav2vec", "full", max_steps=4_000).train.warmup_steps == 5        # 500 of 400k, kept in proportion
    with pytest.raises(ConfigError, match="scale"):
        recipe("wav2vec", "huge")


def test_error_empty_batch():
    m = Wav2Vec(Wav2VecConfig.preset("tiny"))
    with pytest.raises(ConfigError, match="empty batch"):
        m.compute_loss({"audio": torch.zeros(0, 16000), "lengths": torch.zeros(0, dtype=torch.long)}, 0)
    with pytest.raises(ConfigError, match="audio"):
        m.compute_loss({"wave": torch.zeros(1, 16000)}, 0)


def test_error_utterances_shorter_than_the_receptive_field():
    m = Wav2Vec(Wav2VecConfig.preset("tiny"))
    with pytest.raises(AudioError, match="has 300 samples .* needs at least 2385 samples"):
        m.compute_loss({"audio": torch.randn(2, 464), "lengths": torch.tensor([464, 300])}, 0)


def test_error_more_prediction_steps_than_frames():
    m = Wav2Vec(Wav2VecConfig.preset("tiny"))   # K = 12 needs 13 frames = 465 + 12 * 160 = 2385 samples
    with pytest.raises(AudioError, match="needs at least 2385 samples .12 frames ahead for K=12 steps"):
        m.compute_loss({"audio": torch.randn(1, 2384)}, 0)
    loss, _ = m.compute_loss({"audio": torch.randn(1, 2385)}, 0)
    assert torch.isfinite(loss)


def test_error_more_negatives_than_frames():
    m = Wav2Vec(Wav2VecConfig.preset("tiny", prediction_steps=2, num_negatives=20))
    with pytest.raises(AudioError, match="needs at least 3665 samples .* and 20 distractors"):
        m.compute_loss({"audio": torch.randn(1, 465 + 10 * 160)}, 0)   # 11 frames, 21 needed
    assert m.min_input_samples == 465 + 20 * 160


@pytest.mark.parametrize("kwargs, field", [
    ({"prediction_steps": 0}, "prediction_steps"),
    ({"num_negatives": -1}, "num_negatives"),
    ({"prediction_offset": 0}, "prediction_offset"),
    ({"encoder_layers": ((512, 0, 5),)}, r"encoder_layers\[0\]"),
    ({"context_layers": ()}, "context_layers"),
    ({"norm": "batch"}, "norm"),
    ({"activation": "tanh"}, "activation"),
    ({"dropout": 1.5}, "dropout"),
    ({"loss": "hinge"}, "loss"),
    ({"predictor_lr_scale": 0.0}, "predictor_lr_scale"),
])
def test_invalid_configs_name_field_expected_and_found(kwargs, field):
    with pytest.raises(ConfigError, match=rf"Wav2VecConfig\.{field}: expected .*, found"):
        Wav2VecConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="preset"):
        Wav2VecConfig.preset("base")


def _dev_batches():
    g = torch.Generator().manual_seed(3)
    audio = torch.randn(3, 8000, generator=g)
    return [{"audio": audio[:2], "lengths": torch.tensor([8000, 6000])},
            {"audio": audio[2:], "lengths": torch.tensor([8000])}]


def test_evaluate_prediction_is_reproducible_and_weighted_by_positives():
    from speechssl.models.wav2vec import evaluate_prediction

    torch.manual_seed(0)
    model = Wav2Vec(Wav2VecConfig.preset("tiny"))
    model.train()
    state = torch.random.get_rng_state()
    a = evaluate_prediction(model, _dev_batches(), seed=1)
    assert torch.equal(state, torch.random.get_rng_state())      # the global generator is untouched
    assert model.training                                        # the mode is restored
    b = evaluate_prediction(model, _dev_batches(), seed=1)
    assert a["loss"] == b["loss"] and (a["step_accuracy"] == b["step_accuracy"]).all()
    # positives: for each utterance of F frames, sum over k = 1..12 of (F - k)
    frames = [int(model.frame_lengths(torch.tensor([n]))) for n in (8000, 6000, 8000)]
    assert a["positives"] == sum(f - k for f in frames for k in range(1, 13))
    assert a["step_accuracy"].shape == (12,) and a["chance_loss"] == pytest.approx(3.351, abs=1e-3)
    # an untrained model scores near chance on random audio
    assert abs(a["accuracy"] - a["chance_accuracy"]) < 0.1
    with pytest.raises(ValueError, match="no prediction targets"):
        evaluate_prediction(model, [])
