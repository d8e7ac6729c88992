"""CTC fine-tuning settings per scale, letter transcripts for LibriSpeech, and ``python -m speechssl.finetune``."""

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl import finetune as ft
from speechssl.checkpoint import CheckpointError
from speechssl.data.dataset import AudioDataset
from speechssl.data.manifest import Utterance
from speechssl.errors import ConfigError
from speechssl.data.transcripts import LETTERS, letters_to_words, transcript_units
from speechssl.decoding import beam_decode, greedy_decode
from speechssl.engine import TrainConfig, Trainer
from speechssl.metrics import word_error_rate
from speechssl.models.ctc import CTCConfig
from speechssl.models.hubert import Hubert
from speechssl.models.wav2vec2 import Wav2Vec2, Wav2Vec2Config
from speechssl.recipes import CTC_MODES, recipe


def ctc(scale, mode="finetune", **overrides):
    return recipe(f"wav2vec2_ctc_{mode}", scale, **overrides)


def test_full_scale_is_fairseq_base_10m():
    r = ctc("full")
    cfg, train = r.model, r.train
    assert cfg == CTCConfig()
    assert (cfg.freeze_updates, cfg.mask_prob, cfg.mask_length, cfg.mask_channel_prob, cfg.mask_channel_length,
            cfg.layer_drop) == (10_000, 0.65, 10, 0.25, 64, 0.1)
    assert (train.lr, train.max_steps, train.schedule, train.tri_stage_ratios, train.final_lr_scale,
            train.max_batch_samples, train.accum_steps, train.crop_samples) == (
        5e-5, 13_000, "tri_stage", (0.1, 0.4, 0.5), 0.05, 3_200_000, 4, None)


@pytest.mark.parametrize("scale", ["tiny", "reduced", "full"])
def test_modes_differ_only_in_what_trains(scale):
    fine, scratch, probe = (ctc(scale, m).model for m in CTC_MODES)
    assert fine.freeze_updates > 0 and not fine.train_feature_encoder and not fine.linear_probe
    assert scratch == dataclasses.replace(fine, freeze_updates=0, train_feature_encoder=True)
    assert probe == dataclasses.replace(fine, freeze_updates=0, linear_probe=True)
    assert ctc(scale, "probe").train.lr == pytest.approx(10 * ctc(scale, "scratch").train.lr)
    assert ctc(scale).train.lr == pytest.approx(ctc(scale, "scratch").train.lr * (0.5 if scale == "tiny" else 1.0))
    # the same budget for every row: updates and batches
    for key in ("max_steps", "max_batch_samples"):
        assert len({getattr(ctc(scale, m).train, key) for m in CTC_MODES}) == 1
    with pytest.raises(ConfigError, match="model: expected one of"):
        ctc(scale, "distill")


@pytest.mark.parametrize("steps", [60, 600, 13_000])
def test_the_freeze_keeps_its_share_of_the_run(steps):
    """A shorter run still unfreezes the Transformer: the freeze is the recipe's share of the updates."""
    for scale in ("tiny", "full"):
        base = ctc(scale)
        r = ctc(scale, max_steps=steps)
        assert r.model.freeze_updates == round(base.model.freeze_updates * steps / base.train.max_steps) < steps
    assert ctc("tiny", max_steps=60, freeze_updates=50).model.freeze_updates == 50     # an override is kept


def test_letters_follow_fairseq_ltr_labels():
    u = Utterance(id="a", path="a.wav", num_samples=1, speaker="s", text="A CAT'S", words=["A", "CAT'S"])
    assert transcript_units(u, "letters") == ["A", "|", "C", "A", "T", "'", "S", "|"]
    assert set(transcript_units(u, "letters")) <= set(LETTERS) and len(LETTERS) == 28
    assert letters_to_words(list("A|CAT'S||")) == ["A", "CAT'S"]
    with pytest.raises(ConfigError, match="expected one of"):
        transcript_units(u, "words")
    rate = word_error_rate([(list("THE|CAT|"), list("THE|CAP|")), (list("A|"), list("A|B|"))])
    assert (rate.errors, rate.reference_length) == (2, 3)           # one substitution, one insertion


def test_beam_search_with_a_word_boundary_in_the_vocabulary():
    pytest.importorskip("flashlight.lib.text")
    vocab = ["|", "A", "B"]
    # the best path, its greedy labelling, and the beam's (boundaries at the edges normalised: A | B |)
    for path, greedy in (([1, 2, 0, 1, 3, 3], [1, 2, 1, 3]), ([2, 0, 1, 3, 1], [2, 1, 3, 1]), ([2, 2, 3], [2, 3])):
        lp = torch.full((1, len(path), 4), -12.0)
        lp[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
        lp = lp.log_softmax(-1)
        lengths = torch.tensor([len(path)])
        assert greedy_decode(lp, lengths) == [greedy]
        expected = [2, 1, 3, 1] if 1 in greedy[1:] or greedy[0] == 1 else [2, 3, 1]
        assert beam_decode(lp, lengths, vocab, beam_size=8) == [expected]


def _corpus(folder, n=6):
    rng = np.random.default_rng(0)
    utts = []
    for i in range(n):
        length = 8_000 + 800 * i
        sf.write(folder / f"u{i}.wav", (0.1 * rng.standard_normal(length)).astype(np.float32), 16_000, subtype="FLOAT")
        utts.append(Utterance(id=f"u{i}", path=f"u{i}.wav", num_samples=length, speaker=f"s{i % 2}",
                              phones=["AA", "B", "K"][: 1 + i % 3], words=["AB"]))
    return utts


@pytest.fixture
def pretrained(tmp_path):
    """A wav2vec2 tiny checkpoint written by the training engine (step 0, random weights)."""
    torch.manual_seed(0)
    model = Wav2Vec2(Wav2Vec2Config.preset("tiny"))
    (tmp_path / "p").mkdir()
    data = AudioDataset(_corpus(tmp_path / "p", n=2), tmp_path / "p")
    cfg = TrainConfig(model="wav2vec2", out_dir=str(tmp_path / "pre"), max_steps=1, crop_samples=None)
    Trainer(model, cfg, data).save_checkpoint()
    return tmp_path / "pre", model


def test_build_loads_the_pretrained_encoder(pretrained):
    run, enc = pretrained
    m = ctc("tiny").build(vocab=ft.PHONE_VOCAB, pretrained=run)
    for k, v in enc.state_dict().items():
        assert torch.equal(m.encoder.state_dict()[k], v), k
    assert m.cfg == ctc("tiny").model
    probe = ctc("tiny", "probe").build(vocab=ft.PHONE_VOCAB, pretrained=run)
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    with pytest.raises(CheckpointError, match="cannot load the pre-trained model: .*another configuration"):
        ctc("reduced").build(vocab=ft.PHONE_VOCAB, pretrained=run)


def test_build_loads_a_hubert_encoder(tmp_path):
    """A HuBERT checkpoint of any iteration (its K, label rate and alpha) fine-tunes with the same CTC recipe;
    a checkpoint of a model without a CTC path is refused by name."""
    torch.manual_seed(0)
    hub = Hubert(recipe("hubert", "tiny", num_classes=(7,), label_rate=100, pred_nomask_weight=0.5).model)
    (tmp_path / "p").mkdir()
    data = AudioDataset(_corpus(tmp_path / "p", n=2), tmp_path / "p")
    Trainer(hub, TrainConfig(model="hubert", out_dir=str(tmp_path / "hub"), max_steps=1, crop_samples=None),
            data).save_checkpoint()
    m = ctc("tiny").build(vocab=ft.PHONE_VOCAB, pretrained=tmp_path / "hub")
    assert isinstance(m.encoder, Hubert) and m.encoder.cfg.num_classes == (7,)
    for k, v in hub.state_dict().items():
        assert torch.equal(m.encoder.state_dict()[k], v), k
    m.eval()
    with torch.no_grad():
        log_probs, frames = m(torch.randn(1, 16_000))
    assert log_probs.shape == (1, int(frames[0]), 1 + len(ft.PHONE_VOCAB))
    with pytest.raises(CheckpointError, match="another configuration"):
        ctc("reduced").build(vocab=ft.PHONE_VOCAB, pretrained=tmp_path / "hub")
    from speechssl.models.wav2vec import Wav2Vec, Wav2VecConfig
    Trainer(Wav2Vec(Wav2VecConfig.preset("tiny")), TrainConfig(model="wav2vec", out_dir=str(tmp_path / "w2v"),
            max_steps=1, crop_samples=None), data).save_checkpoint()
    with pytest.raises(ConfigError, match="expected a checkpoint of wav2vec2 or hubert, found one of 'wav2vec'"):
        ctc("tiny").build(vocab=ft.PHONE_VOCAB, pretrained=tmp_path / "w2v")


def test_a_large_encoder_fine_tunes_at_full_scale_with_vox_10m_on_standardised_waveforms(tmp_path, monkeypatch):
    """At full scale an encoder of LARGE's shape is rebuilt from its own configuration and takes fairseq's
    vox_10m.yaml (twice base_10m's rate, 1.28M samples per GPU, update_freq 5); a checkpoint that records
    standardised waveforms gives the recipe normalize=True and a model whose data is standardised. LARGE's
    shape is made small here (the test's encoder is 2 layers of 64): the rule, not the size, is under test."""
    import speechssl.recipes as rc
    from speechssl.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, model_config_of, save_checkpoint

    torch.manual_seed(0)
    enc = Wav2Vec2(Wav2Vec2Config.preset("tiny", num_layers=2, embed_dim=64, ffn_dim=128, num_heads=4))
    path = tmp_path / "large.pt"
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_name": "wav2vec2",
                           "model_config": model_config_of(enc), "model": enc.state_dict(), "step": 0,
                           "config": {"normalize": True}})
    base = ctc("full")
    with pytest.raises(CheckpointError, match="another configuration"):        # not LARGE's shape: refused
        base.build(vocab=LETTERS, pretrained=path)
    monkeypatch.setattr(rc, "LARGE_SHAPE", (64, 2))
    r = rc.ctc_recipe("finetune", "full", path)
    assert (r.train.lr, r.train.max_batch_samples, r.train.accum_steps, r.train.normalize) == (1e-4, 1_280_000, 5, True)
    assert r.model == base.model and dataclasses.replace(
        r.train, lr=base.train.lr, max_batch_samples=base.train.max_batch_samples, accum_steps=base.train.accum_steps,
        normalize=False) == base.train                                       # nothing else of base_10m changes
    assert rc.ctc_recipe("probe", "full", path).train.lr == pytest.approx(1e-3)
    assert rc.ctc_recipe("finetune", "full", path, lr=3e-5).train.lr == 3e-5     # an override still wins
    m = r.build(vocab=LETTERS, pretrained=path)
    assert m.encoder.cfg == enc.cfg and m.normalize_waveform
    for k, v in enc.state_dict().items():
        assert torch.equal(m.encoder.state_dict()[k], v), k
    (tmp_path / "c").mkdir()
    utts = _corpus(tmp_path / "c", n=1)
    audio = ft.transcribed(m, utts, tmp_path / "c", "letters").audio[0]["audio"]
    assert abs(float(audio.mean())) < 1e-4 and float(audio.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(CheckpointError, match="another configuration"):        # LARGE only at full scale
        ctc("reduced").build(vocab=LETTERS, pretrained=path)


def test_the_scales_own_checkpoints_keep_their_recipe_and_raw_waveforms(pretrained, tmp_path):
    from speechssl.recipes import ctc_recipe

    run, _ = pretrained
    for mode in CTC_MODES:
        assert ctc_recipe(mode, "tiny", run if mode != "scratch" else None) == ctc("tiny", mode)
    m = ctc_recipe("finetune", "tiny", run).build(vocab=ft.PHONE_VOCAB, pretrained=run)
    assert m.normalize_waveform is False
    (tmp_path / "c").mkdir()
    utts = _corpus(tmp_path / "c", n=1)
    item = ft.transcribed(m, utts, tmp_path / "c", "phones").audio[0]["audio"]
    assert torch.equal(item, AudioDataset(utts, tmp_path / "c", max_samples=None, crop="none")[0]["audio"])


def test_cli_trains_each_mode_and_writes_error_rates(tmp_path, pretrained, monkeypatch, capsys):
    run, _ = pretrained
    (tmp_path / "c").mkdir()
    utts = _corpus(tmp_path / "c")
    seen = []

    def fake_split(r, data, subsets, default, info, **kwargs):
        seen.append((data, subsets, default))
        return [(subsets[0] if subsets else default, utts)], tmp_path / "c", "phones"

    monkeypatch.setattr(ft, "load_split", fake_split)
    for mode in CTC_MODES:
        out = tmp_path / mode
        argv = ["--scale", "tiny", "--mode", mode, "--out", str(out), "--max-steps", "2", "--log-every", "1"]
        if mode != "scratch":
            argv += ["--pretrained", str(run)]
        assert ft.main(argv) == 0, capsys.readouterr().err
        res = json.loads((out / "eval.json").read_text())
        assert (res["mode"], res["updates"], res["unit"]) == (mode, 2, "phones")
        ref = res["test"]["greedy"]["reference_length"]
        assert ref == sum(len(u.phones) for u in utts)
        assert res["test"]["greedy"]["unit_error_rate"] == pytest.approx(res["test"]["greedy"]["errors"] / ref)
    assert seen[:2] == [("synth", None, "finetune"), ("synth", None, "test")]
    assert "test: PER greedy" in capsys.readouterr().out


def test_cli_errors(tmp_path, pretrained, capsys):
    run, _ = pretrained
    assert ft.main(["--scale", "tiny", "--mode", "scratch", "--pretrained", str(run), "--out", str(tmp_path / "x")]) == 2
    assert "takes no pre-trained checkpoint" in capsys.readouterr().err
    assert ft.main(["--scale", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert "needs a wav2vec2 or hubert checkpoint" in capsys.readouterr().err
    assert ft.main(["--scale", "tiny", "--pretrained", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 1
    assert "no checkpoint at" in capsys.readouterr().err
    assert ft.main(["--scale", "tiny", "--data", "librispeech:/x", "--pretrained", str(run)]) == 2
    assert "name the LibriSpeech subsets" in capsys.readouterr().err


def test_cli_fine_tunes_on_librispeech_letters(tmp_path, pretrained, capsys):
    """LibriSpeech layout (a nested subset, as Libri-light's ``1h/0/clean``) -> letters, letter and word error rates."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_librispeech import make_fake_librispeech

    run, _ = pretrained
    records = make_fake_librispeech(tmp_path / "ls", {"1h/0/clean": {19: {198: 3}}, "dev-clean": {84: {121: 2}}})
    out = tmp_path / "ft"
    argv = ["--scale", "tiny", "--pretrained", str(run), "--data", f"librispeech:{tmp_path / 'ls'}",
            "--subsets", "1h/0/clean", "--eval-subsets", "dev-clean", "--out", str(out), "--max-steps", "2"]
    if importlib.util.find_spec("flashlight") is not None:
        argv += ["--beam", "4"]
    assert ft.main(argv) == 0, capsys.readouterr().err
    res = json.loads((out / "eval.json").read_text())
    dev = res["dev-clean"]["greedy"]
    assert res["unit"] == "letters"
    texts = [r["text"] for r in records.values() if r["subset"] == "dev-clean"]
    assert dev["words"] == sum(len(t.split()) for t in texts)
    assert dev["reference_length"] == sum(len(t.replace(" ", "")) + len(t.split()) for t in texts)
    assert 0.0 <= dev["wer"] and dev["word_errors"] == round(dev["wer"] * dev["words"])
    if "--beam" in argv:
        beam = res["dev-clean"]["beam"]
        assert (beam["words"], beam["reference_length"]) == (dev["words"], dev["reference_length"])
    assert "dev-clean: letter error rate greedy" in capsys.readouterr().out
