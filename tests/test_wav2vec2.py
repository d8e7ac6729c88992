"""wav2vec 2.0: parity with torchaudio's encoder, parameter counts, the pre-training loss and its errors."""

import math

import pytest
import torch
import torchaudio

from speechssl.errors import AudioError, ConfigError
from speechssl.interop import from_torchaudio, load_pretrained
from speechssl.models.wav2vec2 import Wav2Vec2, Wav2Vec2Config, sample_masked_negatives
from speechssl.nn.quantizers import exponential_temperature


def pretraining_only_params(cfg, enc_dim=512):
    """mask_emb, the Gumbel logits (C_enc -> G V), the codebook (G V x F / G), project_q and final_proj."""
    gv = cfg.groups * cfg.num_vars
    return (cfg.embed_dim + enc_dim * gv + gv + gv * (cfg.final_dim // cfg.groups)
            + cfg.final_dim ** 2 + cfg.final_dim + cfg.embed_dim * cfg.final_dim + cfg.final_dim)


@pytest.mark.parametrize("name, builder, mode, tol", [
    ("base", torchaudio.models.wav2vec2_base, "group_norm", 1e-5),
    ("large", torchaudio.models.wav2vec2_large_lv60k, "layer_norm", 1e-5),
])
def test_parity_with_torchaudio(name, builder, mode, tol):
    torch.manual_seed(0)
    ref = builder().eval()
    ours = Wav2Vec2(Wav2Vec2Config.preset(name)).eval()
    # same architecture: our count is torchaudio's plus the parts torchaudio leaves out (pre-training only)
    n_ref = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in ours.parameters()) == n_ref + pretraining_only_params(ours.cfg)
    load_pretrained(ours, from_torchaudio(ref.state_dict(), mode), source=f"torchaudio {name}")
    x = torch.randn(2, 12_000)
    with torch.no_grad():
        f_ref, _ = ref.feature_extractor(x, None)                   # (B, T, C)
        f_ours, _ = ours.feature_encoder(x)                         # (B, C, T)
        assert (f_ref - f_ours.transpose(1, 2)).abs().max() <= tol
        layers_ref = ref.extract_features(x)[0]
        out = ours(x, return_hidden_states=True)
        assert len(layers_ref) == len(out.hidden_states) - 1 == ours.cfg.num_layers
        for i, (a, b) in enumerate(zip(layers_ref, out.hidden_states[1:])):
            assert (a - b).abs().max() <= tol, f"layer {i + 1}"
        assert (ref(x)[0] - out.x).abs().max() <= tol


def test_parameter_counts():
    # fairseq's pre-training models: BASE 95.0M, LARGE 317.4M (both with the quantizer)
    assert sum(p.numel() for p in Wav2Vec2(Wav2Vec2Config.preset("base")).parameters()) == 95_044_608
    cfg = Wav2Vec2Config.preset("large")
    assert (cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim, cfg.final_dim) == (1024, 24, 16, 4096, 768)
    assert Wav2Vec2Config.preset("base").num_heads == 12


def test_load_pretrained_lists_missing_and_unexpected_keys():
    model = Wav2Vec2(Wav2Vec2Config.preset("tiny"))
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.layers.0.")}
    sd["aux.weight"] = torch.zeros(3)
    with pytest.raises(ConfigError, match=r"missing keys: \['encoder\.layers\.0\..*unexpected keys: \['aux\.weight'\]"):
        load_pretrained(model, sd)
    bad = dict(model.state_dict())
    bad["post_extract_proj.weight"] = torch.zeros(2, 2)
    with pytest.raises(ConfigError, match="shape mismatches.*post_extract_proj.weight"):
        load_pretrained(model, bad)
    # the pre-training parts may be absent (an encoder-only checkpoint)
    load_pretrained(model, {k: v for k, v in model.state_dict().items() if not k.startswith("quantizer.")})


def test_temperature_schedule_of_the_paper():
    assert exponential_temperature(0, 2.0, 0.5, 0.999995) == 2.0
    assert exponential_temperature(100_000, 2.0, 0.5, 0.999995) == pytest.approx(2 * 0.999995 ** 100_000)
    assert exponential_temperature(400_000, 2.0, 0.5, 0.999995) == 0.5     # floor reached after ~277k updates
    q = Wav2Vec2(Wav2Vec2Config.preset("tiny")).quantizer
    assert q.temperature(0) == 2.0 and q.temperature(10**6) == 0.5


def test_negatives_come_from_other_masked_frames_of_the_same_utterance():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(3, 40, dtype=torch.bool)
    mask[0, 2:12] = True
    mask[1, 5:8] = True
    mask[2, 20:40] = True
    idx = sample_masked_negatives(mask, 50, generator=g)          # (M, K)
    counts = mask.sum(1).tolist()
    utt = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    starts = torch.tensor([0, counts[0], counts[0] + counts[1]])
    assert idx.shape == (sum(counts), 50)
    assert (utt[idx] == utt[:, None]).all()                        # same utterance
    assert (idx != torch.arange(sum(counts))[:, None]).all()       # never the frame itself
    own = torch.arange(sum(counts)) - starts[utt]
    assert set(idx[utt == 1].flatten().tolist()) <= {counts[0] + j for j in range(3)}
    assert own.max() < max(counts)
    with pytest.raises(ConfigError, match="at least 2 masked frames"):
        sample_masked_negatives(torch.tensor([[True, False, False]]), 5)


def test_tiny_compute_loss_contract():
    torch.manual_seed(0)
    model = Wav2Vec2(Wav2Vec2Config.preset("tiny"))
    audio = torch.randn(2, 48_000)
    batch = {"audio": audio, "lengths": torch.tensor([48_000, 40_000])}
    loss, metrics = model.compute_loss(batch, num_updates=0)
    loss.backward()
    assert torch.isfinite(loss)
    assert metrics["temp"] == 2.0 and 0.3 < metrics["mask_frac"] < 0.65           # about 49% of frames masked
    assert 1.0 <= float(metrics["code_ppl"]) <= 2 * 64 and 0 <= float(metrics["diversity_loss"]) <= 1
    # near the chance level log(101) at initialisation
    assert abs(float(metrics["contrastive_loss"]) - math.log(101)) < 1.5
    assert model.chance_loss == pytest.approx(math.log(101))
    assert model.feature_encoder.blocks[0].conv.weight.grad is not None          # gradient reaches the encoder
    assert model.mask_emb.grad is not None and model.quantizer.codebook.grad is not None


def test_features_ignore_padding():
    torch.manual_seed(0)
    model = Wav2Vec2(Wav2Vec2Config.preset("tiny")).eval()
    a = torch.randn(1, 16_000)
    alone = model(a).x
    padded = model(torch.cat([a, torch.zeros(1, 8_000)], 1), torch.tensor([16_000])).x[:, :alone.shape[1]]
    assert (alone - padded).abs().max() < 1e-4


def test_errors():
    model = Wav2Vec2(Wav2Vec2Config.preset("tiny"))
    with pytest.raises(AudioError, match="400"):
        model.compute_loss({"audio": torch.randn(2, 300), "lengths": torch.tensor([300, 300])})
    with pytest.raises(ConfigError, match="num_negatives=100"):
        model.compute_loss({"audio": torch.randn(1, 16_000), "lengths": torch.tensor([16_000])})   # 49 frames
    with pytest.raises(ConfigError, match="mask_prob"):
        Wav2Vec2Config.preset("tiny", mask_prob=12.0)
    with pytest.raises(ConfigError, match="num_heads"):
        Wav2Vec2Config.preset("tiny", num_heads=5)
    with pytest.raises(ConfigError, match="preset"):
        Wav2Vec2Config.preset("huge")


def test_registry_and_training_settings():
    from speechssl.models import MODEL_SPECS
    from speechssl.train import TrainConfig

    spec = MODEL_SPECS["wav2vec2"]
    assert isinstance(spec.build("tiny"), Wav2Vec2)
    for scale in ("tiny", "reduced", "full"):
        cfg = TrainConfig(model="wav2vec2", scale=scale, **spec.train_overrides(scale))
        assert cfg.schedule == "polynomial" and cfg.warmup == round(0.08 * cfg.max_steps)
        # every crop yields more frames than the 100 distractors it must supply
        model_cfg = Wav2Vec2Config.preset({"tiny": "tiny", "reduced": "reduced", "full": "base"}[scale])
        assert (cfg.crop_samples - 400) // 320 + 1 > model_cfg.num_negatives
    full = TrainConfig(model="wav2vec2", scale="full", **spec.train_overrides("full"))
    # Sec. 4.2 (BASE): peak 5e-4, 8% warm-up of 400k updates, 1.4M samples per GPU, crops of 250k samples
    assert (full.lr, full.warmup, full.max_steps, full.max_batch_samples, full.crop_samples) == \
        (5e-4, 32_000, 400_000, 1_400_000, 250_000)
