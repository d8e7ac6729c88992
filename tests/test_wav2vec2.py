"""wav2vec 2.0: parity with torchaudio's encoder, parameter counts, the pre-training loss and its errors."""

import math

import pytest
import torch
import torchaudio

from speechssl.errors import AudioError, ConfigError
from speechssl.interop import from_torchaudio, load_pretrained
from speechssl.models.wav2vec2 import Wav2Vec2, Wav2Vec2Config, sample_masked_negatives
from speechssl.nn.conv import lengths_to_padding_mask
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


def test_continuous_targets_drop_the_quantizer():
    """Table 4's continuous targets (fairseq quantize_targets=False): the targets are project_q of the encoder
    features themselves, the loss has no diversity term, and only the quantizer's parameters go away."""
    cfg = Wav2Vec2Config.preset("tiny", quantize_targets=False)
    torch.manual_seed(0)
    model = Wav2Vec2(cfg)
    assert model.quantizer is None and model.project_q.in_features == model.feature_encoder.out_channels
    quantized = Wav2Vec2(Wav2Vec2Config.preset("tiny"))
    gv, enc = cfg.groups * cfg.num_vars, model.feature_encoder.out_channels
    extra = (enc * gv + gv + gv * (cfg.final_dim // cfg.groups)) + (cfg.final_dim - enc) * cfg.final_dim
    assert sum(p.numel() for p in quantized.parameters()) - sum(p.numel() for p in model.parameters()) == extra
    loss, metrics = model.compute_loss({"audio": torch.randn(2, 48_000)}, num_updates=0)
    loss.backward()
    assert float(metrics["diversity_loss"]) == 0.0 and "code_ppl" not in metrics
    assert float(loss.detach()) == pytest.approx(float(metrics["contrastive_loss"]))       # tiny: no feature penalty
    assert model.project_q.weight.grad is not None and model.feature_encoder.blocks[0].conv.weight.grad is not None
    views = model.frame_views(torch.randn(16_000))
    assert "codes" not in views and views["target"].shape == views["context"].shape


def test_features_ignore_padding():
    torch.manual_seed(0)
    model = Wav2Vec2(Wav2Vec2Config.preset("tiny")).eval()
    a = torch.randn(1, 16_000)
    alone = model(a).x
    padded = model(torch.cat([a, torch.zeros(1, 8_000)], 1), torch.tensor([16_000])).x[:, :alone.shape[1]]
    assert (alone - padded).abs().max() < 1e-4


def test_errors():
    model = Wav2Vec2(Wav2Vec2Config.preset("tiny"))
    with pytest.raises(AudioError, match="has 300 samples .* needs at least 32400 samples"):
        model.compute_loss({"audio": torch.randn(2, 300), "lengths": torch.tensor([300, 300])})
    with pytest.raises(AudioError, match="needs at least 32400 samples .101 frames: a masked target, its 100"):
        model.compute_loss({"audio": torch.randn(1, 16_000), "lengths": torch.tensor([16_000])})   # 49 frames
    with pytest.raises(ConfigError, match="mask_prob"):
        Wav2Vec2Config.preset("tiny", mask_prob=12.0)
    with pytest.raises(ConfigError, match="num_heads"):
        Wav2Vec2Config.preset("tiny", num_heads=5)
    with pytest.raises(ConfigError, match="preset"):
        Wav2Vec2Config.preset("huge")


def test_recipe_and_training_settings():
    from speechssl.recipes import recipe

    assert isinstance(recipe("wav2vec2", "tiny").build(), Wav2Vec2)
    for scale in ("tiny", "reduced", "full"):
        r = recipe("wav2vec2", scale)
        cfg = r.train
        assert cfg.schedule == "polynomial" and cfg.warmup == round(0.08 * cfg.max_steps)
        # every crop yields more frames than the 100 distractors it must supply
        assert cfg.crop_samples >= r.build().min_input_samples
    full = recipe("wav2vec2", "full").train
    assert recipe("wav2vec2", "full").model.temp_decay == pytest.approx(0.999995, abs=1e-12)   # Sec. 4.2
    # Sec. 4.2 (BASE): peak 5e-4, 8% warm-up of 400k updates, 1.4M samples per GPU, crops of 250k samples
    assert (full.lr, full.warmup, full.max_steps, full.max_batch_samples, full.crop_samples) == \
        (5e-4, 32_000, 400_000, 1_400_000, 250_000)


def fairseq_names(cfg):
    """The state-dict keys of fairseq's Wav2Vec2Model for ``cfg`` (fairseq/models/wav2vec/wav2vec2.py)."""
    keys = ["mask_emb", "quantizer.vars", "quantizer.weight_proj.weight", "quantizer.weight_proj.bias",
            "project_q.weight", "project_q.bias", "final_proj.weight", "final_proj.bias",
            "layer_norm.weight", "layer_norm.bias", "post_extract_proj.weight", "post_extract_proj.bias",
            "encoder.pos_conv.0.bias", "encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v",
            "encoder.layer_norm.weight", "encoder.layer_norm.bias"]
    for i in range(len(cfg.conv_layers)):
        keys.append(f"feature_extractor.conv_layers.{i}.0.weight")
        if cfg.conv_bias:
            keys.append(f"feature_extractor.conv_layers.{i}.0.bias")
        if cfg.extractor_mode == "layer_norm":
            keys += [f"feature_extractor.conv_layers.{i}.2.1.{p}" for p in ("weight", "bias")]
    if cfg.extractor_mode == "group_norm":
        keys += [f"feature_extractor.conv_layers.0.2.{p}" for p in ("weight", "bias")]
    for i in range(cfg.num_layers):
        for part in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                     "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm"):
            keys += [f"encoder.layers.{i}.{part}.{p}" for p in ("weight", "bias")]
    return keys


@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
def test_fairseq_names_agree_with_torchaudio_importer_and_load(mode):
    from torchaudio.models.wav2vec2.utils.import_fairseq import _map_key

    from speechssl.interop import fairseq_to_torchaudio_key, from_fairseq

    cfg = Wav2Vec2Config.preset("tiny", extractor_mode=mode, conv_bias=mode == "layer_norm")
    ours = Wav2Vec2(cfg)
    own = ours.state_dict()
    keys = fairseq_names(cfg)
    # every encoder key gets the name torchaudio's own fairseq importer gives it
    for k in keys:
        ta = _map_key(k)
        ours_ta = fairseq_to_torchaudio_key(k)
        if ta is None:                                   # the pre-training head: not in torchaudio
            assert ours_ta is None, k
        else:
            assert ours_ta == ta.replace(".weight_g", ".parametrizations.weight.original0").replace(
                ".weight_v", ".parametrizations.weight.original1"), k
    # a fairseq-named dict with fairseq's shapes loads completely, each tensor landing in its place
    torch.manual_seed(1)
    shapes = {"quantizer.vars": (1, cfg.groups * cfg.num_vars, cfg.final_dim // cfg.groups)}
    fake, expected = {}, from_fairseq({k: torch.zeros(1) for k in keys}, mode)
    assert set(expected) == set(own)                     # the same set of names, none missing, none extra
    for k in keys:
        target = from_fairseq({k: torch.zeros(shapes.get(k, (1,)))}, mode)
        (name, _), = target.items()
        fake[k] = torch.randn(shapes.get(k, tuple(own[name].shape)))
    load_pretrained(ours, from_fairseq(fake, mode), source="fairseq")
    assert torch.equal(ours.quantizer.codebook, fake["quantizer.vars"][0])
    assert torch.equal(ours.encoder.layers[1].feed_forward.intermediate_dense.weight, fake["encoder.layers.1.fc1.weight"])
    assert torch.equal(ours.mask_emb, fake["mask_emb"])
    # a fine-tuned checkpoint: the w2v_model. prefix goes, the CTC head is reported
    tuned = {f"w2v_model.{k}": v for k, v in fake.items()}
    tuned["proj.weight"] = torch.zeros(32, cfg.embed_dim)
    with pytest.raises(ConfigError, match=r"unexpected keys: \['proj.weight'\]"):
        load_pretrained(ours, from_fairseq(tuned, mode), source="fine-tuned")


@pytest.mark.parametrize("mode, stable", [("group_norm", False), ("layer_norm", True)])
def test_huggingface_weights_load_and_give_the_same_outputs(mode, stable):
    """A ``transformers`` model with random weights (BASE-like post-LN with a group-norm encoder,
    LARGE-like pre-LN with layer norms): renamed, loaded strictly, same encoder, Transformer and
    quantizer outputs."""
    transformers = pytest.importorskip("transformers")  # in requirements-lock.txt, so CI runs this
    from speechssl.interop import from_huggingface

    torch.manual_seed(0)
    hf_args = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
        conv_bias=stable, feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_codevectors_per_group=8,
        num_codevector_groups=2, codevector_dim=32, proj_codevector_dim=32)
    ref = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**hf_args)).eval()
    cfg = Wav2Vec2Config(conv_layers=tuple((32, k, s) for _, k, s in Wav2Vec2Config().conv_layers),
                         extractor_mode=mode, conv_bias=stable, embed_dim=64, num_layers=2, num_heads=4, ffn_dim=128,
                         layer_norm_first=stable, conv_pos=16, conv_pos_groups=4, final_dim=32, num_vars=8, groups=2)
    ours = Wav2Vec2(cfg).eval()
    renamed = from_huggingface(ref.state_dict(), mode)
    assert set(renamed) == set(ours.state_dict())                       # nothing missing, nothing extra
    load_pretrained(ours, renamed, source="transformers", allow_missing=())
    x = torch.randn(2, 8_000)
    with torch.no_grad():
        hf = ref.wav2vec2(x, output_hidden_states=True)
        out = ours(x, return_hidden_states=True)
        assert (hf.extract_features - out.features).abs().max() <= 1e-5       # normalised encoder output
        assert (hf.last_hidden_state - out.x).abs().max() <= 1e-5
        if not stable:                                                       # post-LN: every layer's output
            for i, (a, b) in enumerate(zip(hf.hidden_states, out.hidden_states)):
                assert (a - b).abs().max() <= 1e-5, f"hidden state {i}"
        # the quantizer picks the same entries (eval: argmax) and project_q / project_hid agree
        q_ref, _ = ref.quantizer(hf.extract_features)
        q = ours.quantizer(out.features, out.lengths).x
        assert (ref.project_q(q_ref) - ours.project_q(q)).abs().max() <= 1e-5
        assert (ref.project_hid(hf.last_hidden_state) - ours.final_proj(out.x)).abs().max() <= 1e-5
    # a CTC model: the prefix goes, the lm_head is reported
    ctc = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**hf_args, vocab_size=12))
    with pytest.raises(ConfigError, match=r"unexpected keys: \['lm_head\.weight', 'lm_head\.bias'\]"):
        load_pretrained(ours, from_huggingface(ctc.state_dict(), mode), source="transformers CTC")



def test_fairseq_initialisation_keeps_the_encoder_output_alive():
    """kaiming_normal_ convolutions and N(0, 0.02) Transformer weights (fairseq wav2vec2.py). With
    PyTorch's default convolution init, the tiny encoder's output had a mean square of 4e-7."""
    torch.manual_seed(0)
    m = Wav2Vec2(Wav2Vec2Config.preset("tiny"))
    conv = m.feature_encoder.blocks[3].conv.weight
    fan_in = conv.shape[1] * conv.shape[2]
    assert conv.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.05)
    q = m.encoder.layers[0].attention.q_proj
    assert q.weight.std().item() == pytest.approx(0.02, rel=0.05) and not q.bias.any()
    _, _, pen = m.encode(torch.randn(2, 16_000))
    assert pen.item() > 1e-2


def test_minimum_input_and_dropping_short_utterances():
    from types import SimpleNamespace

    from speechssl.engine import drop_short_utterances

    m = Wav2Vec2(Wav2Vec2Config.preset("tiny"))
    need = m.min_input_samples
    assert need == 400 + 100 * 320
    assert int(m.frame_lengths(torch.tensor([need]))) == m.cfg.num_negatives + 1
    utts = [SimpleNamespace(id=f"u{i}", num_samples=n) for i, n in enumerate((need - 1, need, 5 * need))]
    assert [u.id for u in drop_short_utterances(utts, need)] == ["u1", "u2"]
    assert len(drop_short_utterances(utts, None)) == 3
    with pytest.raises(ConfigError, match=r"pretrain: every utterance is shorter than the model's minimum of 32400 "
                                          r"samples \(the longest has 100\)"):
        drop_short_utterances([SimpleNamespace(id="a", num_samples=100)], need, what="pretrain")


def test_diversity_perplexity_over_masked_frames_matches_hugging_face():
    """The diversity loss averages the codebook distribution over the *masked* frames only, as fairseq
    (``y = unmasked_features[mask_indices]``) and Hugging Face (``_compute_perplexity(probs, mask_time_indices)``)."""
    from transformers import Wav2Vec2Config as HFConfig
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

    torch.manual_seed(0)
    model = Wav2Vec2(Wav2Vec2Config()).eval()                        # BASE, random weights, no dropout
    hf = Wav2Vec2GumbelVectorQuantizer(HFConfig())
    hf.weight_proj.load_state_dict(model.quantizer.logits_proj.state_dict())
    audio, lengths = torch.randn(2, 48_000), torch.tensor([48_000, 40_000])
    with torch.no_grad():
        out = model(audio, lengths, mask=True)
        _, metrics = model.pretraining_loss(out)
    m = out.mask
    with torch.no_grad():
        probs = hf.weight_proj(out.features).view(-1, 2, 320).float().softmax(-1)     # (B * T, G, V)
    hf_masked = float(hf._compute_perplexity(probs, m))
    valid = ~lengths_to_padding_mask(out.lengths, m.shape[1])
    hf_all = float(hf._compute_perplexity(probs, valid))
    assert float(metrics["prob_ppl"]) == pytest.approx(hf_masked, rel=1e-5)
    assert float(metrics["diversity_loss"]) == pytest.approx((640 - hf_masked) / 640, rel=1e-5)
    assert abs(hf_masked - hf_all) > 0.5                             # the two averages differ: the test tells them apart


def test_released_weights_become_a_checkpoint_that_wav2vec_u_reads(tmp_path, capsys):
    """``python -m speechssl.interop huggingface`` on a saved ``transformers`` model (random weights) writes a
    checkpoint whose model gives the same hidden states as the original, layer by layer; the command's bad
    input gets one-line errors."""
    transformers = pytest.importorskip("transformers")
    from speechssl.interop import main
    from speechssl.wav2vec_u import layer_source, load_feature_model

    torch.manual_seed(0)
    hf_args = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                   conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                   num_codevectors_per_group=8, num_codevector_groups=2, codevector_dim=32, proj_codevector_dim=32)
    ref = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**hf_args)).eval()
    ref.save_pretrained(tmp_path / "hf")
    assert main(["huggingface", str(tmp_path / "hf"), "--out", str(tmp_path / "w2v2.pt")]) == 0
    assert "2 Transformer layers of width 64, raw waveforms" in capsys.readouterr().out
    model = load_feature_model(tmp_path / "w2v2.pt")
    assert model.normalize_waveform is False          # no feature extractor, a group-norm encoder: raw waveforms
    wav = torch.randn(8_000)
    with torch.no_grad():
        hidden = ref.wav2vec2(wav[None], output_hidden_states=True).hidden_states
    for layer in range(3):
        assert (layer_source(model, layer)[0](wav) - hidden[layer][0]).abs().max() <= 1e-5, f"layer {layer}"
    for argv, message in ((["fairseq", str(tmp_path / "w.pt")], "--preset: a fairseq file needs the architecture"),
                          (["fairseq", str(tmp_path / "w.pt"), "--preset", "base"], "expected a fairseq checkpoint file"),
                          (["huggingface", str(tmp_path / "hf"), "--preset", "base"], "--preset: a transformers model")):
        assert main([*argv, "--out", str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


def test_released_weights_record_standardised_waveforms_and_their_features_read_them(tmp_path, capsys):
    """A ``transformers`` model whose feature extractor standardises its input (``do_normalize``, as LV-60k's)
    becomes a checkpoint that says so; its layer features are those of the standardised waveform, as the
    released model computes them, and they are cached under another fingerprint than the raw waveform's.
    ``--no-normalize`` overrides what the source says."""
    transformers = pytest.importorskip("transformers")
    from speechssl.checkpoint import load_checkpoint, normalizes_input
    from speechssl.interop import main
    from speechssl.wav2vec_u import layer_source, load_feature_model

    torch.manual_seed(0)
    hf_args = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                   conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                   num_codevectors_per_group=8, num_codevector_groups=2, codevector_dim=32, proj_codevector_dim=32,
                   feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    ref = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**hf_args)).eval()
    ref.save_pretrained(tmp_path / "hf")
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path / "hf")
    assert main(["huggingface", str(tmp_path / "hf"), "--out", str(tmp_path / "lv.pt")]) == 0
    assert "standardised waveforms" in capsys.readouterr().out
    assert normalizes_input(load_checkpoint(tmp_path / "lv.pt", purpose="read"))
    model = load_feature_model(tmp_path / "lv.pt")
    assert model.normalize_waveform is True
    wav = 0.05 * torch.randn(8_000) + 0.01
    with torch.no_grad():
        hidden = ref.wav2vec2(torch.nn.functional.layer_norm(wav, wav.shape)[None], output_hidden_states=True).hidden_states
        raw = ref.wav2vec2(wav[None], output_hidden_states=True).hidden_states
    featurize, key = layer_source(model, 2)
    assert (featurize(wav) - hidden[2][0]).abs().max() <= 1e-5
    assert (featurize(wav) - raw[2][0]).abs().max() > 1e-3                   # the test tells the two apart
    model.normalize_waveform = False
    assert layer_source(model, 2)[1] != key
    assert main(["huggingface", str(tmp_path / "hf"), "--no-normalize", "--out", str(tmp_path / "raw.pt")]) == 0
    assert load_feature_model(tmp_path / "raw.pt").normalize_waveform is False
    capsys.readouterr()


def test_fairseq_checkpoints_say_whether_the_waveforms_are_standardised():
    """fairseq keeps ``normalize`` in its task settings: a hydra ``cfg`` (newer files) or argparse ``args``."""
    import argparse

    from speechssl.errors import ConfigError
    from speechssl.interop import fairseq_normalize

    assert fairseq_normalize({"cfg": {"task": {"_name": "audio_pretraining", "normalize": True}}}, "vox.pt") is True
    assert fairseq_normalize({"cfg": {"task": {"normalize": False}}}, "base.pt") is False
    assert fairseq_normalize({"args": argparse.Namespace(normalize=True)}, "old.pt") is True
    with pytest.raises(ConfigError, match="bare.pt: expected fairseq's task settings .* pass --normalize or --no-normalize"):
        fairseq_normalize({"model": {}}, "bare.pt")
