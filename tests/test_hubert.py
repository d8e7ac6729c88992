"""HuBERT: parameter counts and parity with torchaudio and Hugging Face, label rates, label sets, bad labels."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from speechssl.errors import ConfigError
from speechssl.interop import from_huggingface, from_torchaudio, from_torchaudio_hubert, load_pretrained
from speechssl.models.hubert import Hubert, HubertConfig
from speechssl.nn.masking import MaskSpec


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset, builder, expected", [
    ("base", torchaudio.models.hubert_pretrain_base, 94_594_176),
    ("large", torchaudio.models.hubert_pretrain_large, 316_606_336),
    ("xlarge", torchaudio.models.hubert_pretrain_xlarge, 964_317_568),
])
def test_parameter_counts_match_torchaudio(preset, builder, expected, monkeypatch):
    """torchaudio's defaults: K = 100 for BASE, 500 for LARGE and X-LARGE; built on the meta device (no memory;
    torchaudio's Transformer initialisation copies through the CPU, so it is skipped there)."""
    from torchaudio.models.wav2vec2 import components

    monkeypatch.setattr(components, "_init_transformer_params", lambda module: None)
    with torch.device("meta"):
        ref = builder()
        ours = Hubert(HubertConfig.preset(preset))
    assert count(ref) == expected
    assert count(ours) == expected


def torchaudio_pair(builder, preset, mode, num_classes):
    torch.manual_seed(0)
    ref = (builder(num_classes=num_classes) if preset == "base" else builder()).eval()   # LARGE: K = 500, fixed
    ours = Hubert(HubertConfig.preset(preset, num_classes=(num_classes,))).eval()
    renamed = from_torchaudio_hubert(ref.state_dict(), mode)
    assert set(renamed) == set(ours.state_dict())                       # nothing missing, nothing extra
    load_pretrained(ours, renamed, source="torchaudio", allow_missing=())
    return ref, ours


@pytest.mark.parametrize("builder, preset, mode, K", [
    (torchaudio.models.hubert_pretrain_base, "base", "group_norm", 100),
    (torchaudio.models.hubert_pretrain_large, "large", "layer_norm", 500),
])
def test_parity_with_torchaudio_pretraining_model(builder, preset, mode, K):
    """Same encoder output and hidden states, same logits and loss under the same mask and labels, within 1e-5."""
    ref, ours = torchaudio_pair(builder, preset, mode, K)
    torch.manual_seed(1)
    audio = torch.randn(2, 16_000)
    with torch.no_grad():
        ref_layers, _ = ref.wav2vec2.extract_features(audio)
        out = ours(audio, return_hidden_states=True)
        for a, b in zip(out.hidden_states[1:], ref_layers):
            assert (a - b).abs().max() <= 1e-5
        ref_x, _ = ref.wav2vec2(audio)
        assert (out.x - ref_x).abs().max() <= 1e-5

        # the same mask in both: torchaudio draws its own with NumPy, so ours is put in by hand
        feats, lengths = ref.wav2vec2.feature_extractor(audio, None)
        ref_pen = feats.float().pow(2).mean()
        x, attention = ref.wav2vec2.encoder._preprocess(feats, lengths)
        mask = MaskSpec.fairseq(0.8, 10, 2).sample(torch.tensor([x.shape[1]] * 2), x.shape[1])
        x = torch.where(mask.unsqueeze(-1), ref.mask_generator.mask_embedding, x)
        x = ref.wav2vec2.encoder.transformer(x, attention_mask=attention)
        labels = torch.randint(0, K, mask.shape)
        logit_m, logit_u = ref.logit_generator(x, labels, mask, ~mask)

        ours_out = ours.contextualize(*ours.encode(audio), mask=mask)
        assert (ours_out.x - x).abs().max() <= 1e-5
        assert abs(float(ours_out.features_pen) - float(ref_pen)) <= 1e-5
        for sel, ref_logits in ((mask, logit_m), (~mask, logit_u)):
            mine, y = ours.logits(ours_out.x[sel])[0], labels[sel]
            rows = torch.arange(len(y))
            assert (mine[rows, y] - ref_logits[:, 0]).abs().max() <= 1e-5     # torchaudio: target in column 0
            others = ref_logits[:, 1:].clone()
            assert torch.isinf(others[rows, y]).all()                          # ... and its duplicate at -inf
            others[rows, y] = mine[rows, y]
            assert (mine - others).abs().max() <= 1e-5
        # torchaudio's example hubert_loss: 10 * pen * N_m + sum CE_m + 0 * sum CE_u, then divided by N_m
        n_m = int(mask.sum())
        zeros = torch.zeros(n_m, dtype=torch.long)
        ref_loss = (10.0 * ref_pen * n_m + F.cross_entropy(logit_m, zeros, reduction="sum")) / n_m
        loss, metrics = ours.pretraining_loss(ours_out, [labels])
        assert abs(float(loss) - float(ref_loss)) <= 1e-5
        assert metrics["num_masked"] == n_m


def test_encoder_loads_torchaudio_hubert_base_and_huggingface():
    """Feature extraction from torchaudio's encoder-only ``hubert_base`` and from a ``transformers``
    ``HubertModel`` (small random configuration): the same Transformer output."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ref = torchaudio.models.hubert_base().eval()
    ours = Hubert(HubertConfig.preset("base")).eval()
    load_pretrained(ours, from_torchaudio(ref.state_dict(), "group_norm"), source="torchaudio hubert_base")
    audio = torch.randn(1, 16_000)
    with torch.no_grad():
        assert (ours.extract_features(audio)[0] - ref(audio)[0]).abs().max() <= 1e-5

    hf = transformers.HubertModel(transformers.HubertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)).eval()
    cfg = HubertConfig(conv_layers=tuple((32, k, s) for _, k, s in HubertConfig().conv_layers), embed_dim=64,
                       num_layers=2, num_heads=4, ffn_dim=128, conv_pos=16, conv_pos_groups=4, final_dim=32)
    small = Hubert(cfg).eval()
    renamed = from_huggingface(hf.state_dict(), "group_norm")
    load_pretrained(small, renamed, source="transformers")
    ctc = {f"hubert.{k}": v for k, v in hf.state_dict().items()}
    assert from_huggingface(ctc, "group_norm", prefix="hubert.").keys() == renamed.keys()
    audio = torch.randn(2, 8_000)
    with torch.no_grad():
        assert (small.extract_features(audio)[0] - hf(audio).last_hidden_state).abs().max() <= 1e-5


def tiny(**kw):
    torch.manual_seed(0)
    return Hubert(HubertConfig.preset("tiny", **kw))


def test_tiny_loss_contract():
    model = tiny()
    audio = torch.randn(2, 48_000)
    frames = int(model.frame_lengths(torch.tensor([48_000])))
    labels = torch.randint(0, 100, (2, frames))
    loss, metrics = model.compute_loss({"audio": audio, "labels": labels})
    loss.backward()
    # near ln K at initialisation; spans of 3 frames started at p = 0.8 / 3 mask about 61% of the frames
    assert abs(float(metrics["loss_m"]) - math.log(100)) < 0.5 and model.chance_loss == pytest.approx(math.log(100))
    assert abs(metrics["mask_frac"] - model.cfg.time_mask.expected_fraction) < 0.15
    assert float(loss.detach()) == pytest.approx(float(metrics["loss_m"]), rel=1e-5)   # alpha = 1, no feature penalty at tiny
    assert model.label_embs.grad is not None and model.feature_encoder.blocks[0].conv.weight.grad is not None
    assert set(metrics) >= {"loss_m", "loss_u", "acc_m", "acc_u", "features_pen", "num_masked", "mask_frac"}


def test_alpha_weights_follow_fairseq():
    """pred_nomask_weight alone normalises by the unmasked frames; both weights add the two sums over N_m."""
    audio = torch.randn(2, 48_000)
    labels = torch.randint(0, 100, (2, 149))
    parts = {}
    for wm, wu in ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):
        model = tiny(pred_masked_weight=wm, pred_nomask_weight=wu).eval()
        torch.manual_seed(3)
        loss, metrics = model.compute_loss({"audio": audio, "labels": labels})
        parts[wm, wu] = (float(loss.detach()), metrics)
    _, m = parts[1.0, 0.0]
    n_m, n_u = m["num_masked"], m["num_masked"] / m["mask_frac"] - m["num_masked"]
    assert parts[1.0, 0.0][0] == pytest.approx(float(m["loss_m"]), rel=1e-5)
    assert parts[0.0, 1.0][0] == pytest.approx(float(m["loss_u"]), rel=1e-5)
    assert parts[1.0, 1.0][0] == pytest.approx(float(m["loss_m"]) + float(m["loss_u"]) * n_u / n_m, rel=1e-5)


def test_mfcc_labels_at_100_hz_are_read_every_other_frame():
    """fairseq forward_targets: 100 Hz labels give the same loss as their [::2] at 50 Hz; labels that end
    early drop the last frames instead of failing."""
    audio = torch.randn(1, 48_000)
    labels100 = torch.randint(0, 100, (1, 298))                  # MFCC frames of 3 s
    results = []
    for rate, labels in ((100, labels100), (50, labels100[:, ::2])):
        model = tiny(label_rate=rate).eval()
        torch.manual_seed(5)
        results.append(model.compute_loss({"audio": audio, "labels": labels}))
    assert float(results[0][0].detach()) == pytest.approx(float(results[1][0].detach()), abs=1e-6)
    model = tiny().eval()
    _, metrics = model.compute_loss({"audio": audio, "labels": labels100[:, ::2][:, :120]})
    assert metrics["num_masked"] / metrics["mask_frac"] == 120


def test_several_label_sets_have_their_own_projection_and_embeddings():
    model = tiny(num_classes=(50, 100))
    assert model.final_proj.out_features == 2 * model.cfg.final_dim and model.label_embs.shape[0] == 150
    labels = [torch.randint(0, 50, (2, 149)), torch.randint(0, 100, (2, 149))]
    loss, metrics = model.compute_loss({"audio": torch.randn(2, 48_000), "labels": labels})
    assert {"loss_m", "loss_m_1", "acc_m_1"} <= set(metrics)
    assert float(loss.detach()) == pytest.approx(float(metrics["loss_m"] + metrics["loss_m_1"]), rel=1e-5)


@pytest.mark.parametrize("labels, message", [
    (torch.full((2, 149), 100), r"cluster ids in \[0, 100\) \(num_classes\), found ids from 100 to 100"),
    (torch.full((2, 149), -3), r"found ids from -3 to -3"),
    (torch.zeros(2, 149), "expected integer cluster ids, found torch.float32"),
    ([torch.zeros(2, 149, dtype=torch.long)] * 2, r"expected 1 label set\(s\)"),
    (None, "the batch has no 'labels'"),
])
def test_bad_labels_get_clear_errors(labels, message):
    model = tiny()
    batch = {"audio": torch.randn(2, 48_000)}
    if labels is not None:
        batch["labels"] = labels
    with pytest.raises(ConfigError, match=message):
        model.compute_loss(batch)


def test_config_errors():
    with pytest.raises(ConfigError, match="label_rate"):
        HubertConfig(label_rate=25)
    with pytest.raises(ConfigError, match="num_classes"):
        HubertConfig(num_classes=(0,))
    with pytest.raises(ConfigError, match="not both 0"):
        HubertConfig(pred_masked_weight=0.0, pred_nomask_weight=0.0)
    with pytest.raises(ConfigError, match="expected one of"):
        HubertConfig.preset("huge")
    assert HubertConfig.preset("base").time_mask.start_prob == pytest.approx(0.08)     # Sec. IV-C: p = 8%, l = 10


def test_the_loss_has_no_atomically_accumulating_backward():
    """Bit-exact CPU training: no gather with repeated indices or scatter-add on the loss's path."""
    from test_determinism import atomic_accumulations

    model = tiny(num_classes=(50, 100), pred_nomask_weight=0.5)
    labels = [torch.randint(0, 50, (2, 149)), torch.randint(0, 100, (2, 149))]
    loss, _ = model.compute_loss({"audio": torch.randn(2, 48_000), "labels": labels})
    assert atomic_accumulations(loss) == []
