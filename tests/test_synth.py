"""Tests of the synthetic corpus: eSpeak NG wrapper, phone folding, sentences, generation.

Corpora are generated from a very small custom configuration (about two minutes of audio),
so the whole module runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechssl.data import synth
from speechssl.data.manifest import read_frame_labels, read_manifest, read_meta
from speechssl.frames import MFCC_FRAMES, MODEL_FRAMES
from speechssl.data.phones import (
    ESPEAK_TO_PHONES,
    PHONE_TO_ID,
    PHONES,
    UnknownPhonemeError,
    english_phoneme_names,
    fold_phoneme,
    fold_sequence,
    is_pause,
    strip_stress,
)
from speechssl.data.sentences import (
    clean_sentence,
    load_sentences,
    sentence_words,
)
from speechssl.data.synth import (
    ENGLISH_VOICES,
    CorpusConfig,
    EmptyTextError,
    EspeakNG,
    Resampler,
    align_phonemes,
    assign_speaker_roles,
    build_speakers,
    corpus_is_current,
    ensure_corpus,
    generate_corpus,
    get_espeak,
    synthesize,
    text_to_phones,
)
from speechssl.data.synth.generate import _progress_enabled
from speechssl.errors import ConfigError, SynthesisError

SEED = 7
VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}

SMALL = CorpusConfig(
    name="test-small", pretrain_seconds=40, finetune_seconds=20, finetune_1h_seconds=30,
    dev_seconds=15, test_seconds=15, unpaired_sentences=60, dev_speakers=4, test_speakers=4,
)


def _audio_splits(root: Path) -> list[str]:
    return list(read_meta(root)["splits"])


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """The same config and seed generated three times: 1 worker, 2 workers, 2 workers again."""
    base = tmp_path_factory.mktemp("corpora")
    return {
        "w1": generate_corpus(base / "w1", SMALL, seed=SEED, workers=1, progress=False),
        "w2": generate_corpus(base / "w2", SMALL, seed=SEED, workers=2, progress=False),
        "w2b": generate_corpus(base / "w2b", SMALL, seed=SEED, workers=2, progress=False),
    }


@pytest.fixture(scope="module")
def corpus(corpora) -> Path:
    return corpora["w2"]


# --- corpus structure ---------------------------------------------------------------------

def test_layout_and_meta(corpus):
    meta = read_meta(corpus)
    assert meta["generator"]["name"] == "speechssl.data.synth"
    assert meta["generator"]["espeak_ng"].startswith("1.")
    assert "GPL" in meta["licence"] and "fortune" in meta["licence"]
    assert meta["seed"] == SEED and meta["config"] == SMALL.to_dict()
    assert meta["sample_rate"] == 16_000 and meta["phones"] == PHONES
    assert set(meta["splits"]) == {"dev", "test", "finetune", "finetune_1h", "pretrain"}
    assert (corpus / "phones.txt").read_text().split() == PHONES
    targets = SMALL.split_targets
    for split, info in meta["splits"].items():
        utts = read_manifest(corpus, split)
        assert len(utts) == info["utterances"] > 0
        seconds = sum(u.seconds for u in utts)
        assert seconds == pytest.approx(info["seconds"], abs=1e-3)
        # Generation stops as soon as the target is reached: less than one utterance over.
        assert targets[split] <= seconds < targets[split] + max(u.seconds for u in utts)
        assert sorted({u.speaker for u in utts}) == info["speakers"]
    assert not list(corpus.parent.glob(f".{corpus.name}.*")), "temporary folders left behind"


def test_alignment_tiles_audio(corpus):
    for split in _audio_splits(corpus):
        for u in read_manifest(corpus, split):
            info = sf.info(str(corpus / u.path))
            assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
            assert info.frames == u.num_samples
            pos = 0
            for phone, start, end in u.alignment:
                assert start == pos and end > start and phone in PHONE_TO_ID
                pos = end
            assert pos == u.num_samples
            assert u.alignment[0][0] == "sil" and u.alignment[-1][0] == "sil"
            assert u.phones == [p for p, _, _ in u.alignment if p != "sil"]
            assert u.words == sentence_words(u.text) and u.words
            assert all(p != "sil" for p in u.phones) and len(u.phones) >= len(u.words)


def test_frame_label_lengths(corpus):
    for split in _audio_splits(corpus):
        utts = {u.id: u for u in read_manifest(corpus, split)}
        for rate, grid in (("100hz", MFCC_FRAMES), ("50hz", MODEL_FRAMES)):
            labels = read_frame_labels(corpus, split, rate)
            assert list(labels) == list(utts)
            for uid, lab in labels.items():
                assert len(lab) == grid.num_frames(utts[uid].num_samples)
                assert lab.min() >= 0 and lab.max() < len(PHONES)


def test_finetune_1h_contains_finetune(corpus):
    ft = read_manifest(corpus, "finetune")
    ft1h = read_manifest(corpus, "finetune_1h")
    assert [u.id for u in ft1h[:len(ft)]] == [u.id for u in ft]
    assert all(u.path.startswith("wav/finetune_1h/") for u in ft1h[len(ft):])


# --- determinism ----------------------------------------------------------------------------

def _file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".npz"}


def test_determinism_across_runs_and_workers(corpora):
    ref = _file_digests(corpora["w1"])
    assert any(k.endswith(".wav") for k in ref) and "pretrain.jsonl" in ref
    for other in ("w2", "w2b"):
        assert _file_digests(corpora[other]) == ref, f"{other} differs from the 1-worker corpus"
        for split in _audio_splits(corpora["w1"]):
            with np.load(corpora["w1"] / f"{split}.frames.npz") as a, \
                    np.load(corpora[other] / f"{split}.frames.npz") as b:
                assert a.files == b.files
                for k in a.files:
                    np.testing.assert_array_equal(a[k], b[k])


def test_different_seed_gives_different_corpus(tmp_path, corpus):
    other = generate_corpus(tmp_path / "s8", SMALL.replace(pretrain_seconds=5, finetune_seconds=5,
                                                             finetune_1h_seconds=0, dev_seconds=5,
                                                             test_seconds=5, unpaired_sentences=5),
                            seed=SEED + 1, workers=2, progress=False)
    assert [u.text for u in read_manifest(other, "dev")] != \
        [u.text for u in read_manifest(corpus, "dev")][:len(read_manifest(other, "dev"))]


# --- speakers and text ----------------------------------------------------------------------

def test_speaker_disjointness(corpus):
    splits = read_meta(corpus)["splits"]
    dev, test = set(splits["dev"]["speakers"]), set(splits["test"]["speakers"])
    train = set().union(*(set(splits[s]["speakers"]) for s in ("pretrain", "finetune", "finetune_1h")))
    assert dev and test and train
    assert not dev & test and not dev & train and not test & train
    speakers = read_meta(corpus)["speakers"]
    assert {speakers[s]["role"] for s in dev} == {"dev"}
    assert {speakers[s]["role"] for s in test} == {"test"}
    assert {speakers[s]["role"] for s in train} == {"train"}


@pytest.mark.parametrize("preset", sorted(synth.PRESETS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_speaker_roles_of_presets(preset, seed):
    config = synth.PRESETS[preset]
    speakers = build_speakers(config)
    assert len(speakers) == len(config.voices) * len(config.variants) >= 100
    assert len({s.id for s in speakers}) == len(speakers)
    assert {(s.voice, s.variant) for s in speakers} == {(v, w) for v in config.voices
                                                        for w in config.variants}
    roles = assign_speaker_roles(speakers, config, seed)
    assert len(roles["dev"]) == config.dev_speakers and len(roles["test"]) == config.test_speakers
    assert not set(roles["dev"]) & set(roles["test"])
    assert not (set(roles["dev"]) | set(roles["test"])) & set(roles["train"])
    assert len(roles["dev"]) + len(roles["test"]) + len(roles["train"]) == len(speakers)
    by_id = {s.id: s for s in speakers}
    # Evaluation speakers cover every accent.
    assert {by_id[s].voice for s in roles["dev"]} == set(config.voices)
    # Speaker ids mean the same voice whatever the seed.
    assert build_speakers(config) == speakers


def test_unpaired_text_disjoint_from_audio(corpus):
    rows = [json.loads(line) for line in (corpus / "unpaired_text.jsonl").read_text().splitlines()]
    assert len(rows) == SMALL.unpaired_sentences == read_meta(corpus)["unpaired_text"]["sentences"]
    audio_text = {u.text for s in _audio_splits(corpus) for u in read_manifest(corpus, s)}
    for row in rows:
        assert set(row) == {"id", "text", "words", "phones", "voice"}
        assert row["text"] not in audio_text
        assert row["words"] == sentence_words(row["text"])
        assert row["phones"] and all(p in PHONE_TO_ID and p != "sil" for p in row["phones"])
        assert row["voice"] in ENGLISH_VOICES
    assert len({r["text"] for r in rows}) == len(rows)


def test_eval_sentences_not_in_training_audio(corpus):
    texts = {s: {u.text for u in read_manifest(corpus, s)} for s in _audio_splits(corpus)}
    train = texts["pretrain"] | texts["finetune"] | texts["finetune_1h"]
    assert not texts["dev"] & train and not texts["test"] & train
    assert not texts["dev"] & texts["test"]


def test_sentences():
    sentences = load_sentences()
    assert len(sentences) > 10_000
    assert sentences == load_sentences()
    assert len({tuple(sentence_words(s)) for s in sentences}) == len(sentences)
    for s in sentences[::50]:
        words = sentence_words(s)
        assert 4 <= len(words) <= 20
        assert s[0].isupper() and s[-1] in ".!?"
        assert not any(c.isdigit() for c in s) and "@" not in s and "/" not in s
        assert clean_sentence(s) == s
    assert sentence_words("Don't panic, it's a well-known fact.") == \
        ["DON'T", "PANIC", "IT'S", "A", "WELL", "KNOWN", "FACT"]
    for bad in ("I paid $30 for it, you know.", "See http://example.com for more.",
                "The IBM machine was down again.", "Too short.", "Hmm, that is odd indeed.",
                "CChheecckk yyoouurr dduupplleexx sswwiittcchh."):
        assert clean_sentence(bad) is None, bad
    with pytest.raises(ValueError, match="offensive"):
        load_sentences(["fortunes-o"])
    with pytest.raises(ValueError, match="excluded"):
        load_sentences(["limerick"])


def test_fortune_folder_override(monkeypatch, tmp_path):
    from speechssl.data.sentences import FORTUNE_DIR_ENV
    from speechssl.errors import CorpusNotFoundError

    monkeypatch.setenv(FORTUNE_DIR_ENV, str(tmp_path))
    with pytest.raises(CorpusNotFoundError, match=FORTUNE_DIR_ENV):
        load_sentences()
    (tmp_path / "fortunes").write_text(
        "%% comment line\n%\nThe cat sat on the mat. Then it slept all day long!\n"
        "\t\t-- Some Author\n%\nMr. Smith paid $5 for a very old hat.\n%\n"
        "He went to the store, etc. and came back home.\n%\n"
        "The cat sat on the mat.\n%\nShe said ``hello'' to the new neighbour -- twice.\n")
    assert load_sentences(["fortunes"]) == [
        "The cat sat on the mat.", "Then it slept all day long!",
        "She said hello to the new neighbour, twice."]


# --- phones ---------------------------------------------------------------------------------

def test_inventory():
    assert PHONES[0] == "sil" and len(PHONES) == 40 and len(set(PHONES)) == 40
    assert PHONE_TO_ID == {p: i for i, p in enumerate(PHONES)}


def test_every_phoneme_of_the_english_tables_is_mapped():
    names = english_phoneme_names(get_espeak().data_path)
    assert len(names) > 100
    unmapped = [n for n in names if not is_pause(n) and n not in ESPEAK_TO_PHONES]
    assert not unmapped


def test_every_emitted_phoneme_is_mapped():
    """Synthesise a varied sample with every voice used by the presets, several variants and
    rates, and phonemise a larger sample; every name must fold (no exception, no sil for a
    non-pause)."""
    espeak = get_espeak()
    sentences = load_sentences()
    variants = synth.DEFAULT_VARIANTS
    seen: set[str] = set()
    for i, text in enumerate(sentences[: 8 * 40]):
        voice = f"{ENGLISH_VOICES[i % 8]}+{variants[i % len(variants)]}"
        raw = espeak.synthesize_raw(text, voice, rate=120 + (i * 37) % 200, pitch=(i * 13) % 101)
        names = [n for _, n in raw.events]
        seen.update(strip_stress(n) for n in names)
        folded = fold_sequence(names, context=voice)
        assert len(folded) == len(names)
    for i, text in enumerate(sentences[::7]):
        for clause in espeak.text_to_phonemes(text, ENGLISH_VOICES[i % 8]):
            for word in clause:
                seen.update(strip_stress(n) for n in word)
                for n in word:
                    fold_phoneme(n)
    for name in seen:
        if not is_pause(name):
            assert name in ESPEAK_TO_PHONES and "sil" not in fold_phoneme(name)
    assert len(seen) > 60


def test_unknown_phoneme_raises():
    with pytest.raises(UnknownPhonemeError, match="ESPEAK_TO_PHONES"):
        fold_phoneme("Qx!")
    with pytest.raises(SynthesisError):
        fold_sequence(["h", "@", "Qx!"])


def test_folding_rules():
    # SQUARE + linking r: one R (CMU "there are" DH EH R AA R).
    assert [p for seq in fold_sequence(["D", "e@", "r-", "'A@"]) for p in seq] == \
        ["DH", "EH", "R", "AA", "R"]
    # NURSE + r: the r is absorbed into ER (CMU "furry" F ER IY).
    assert fold_sequence(["f", "'3:", "r", "i"]) == [("F",), ("ER",), (), ("IY",)]
    # Across a pause nothing is linked.
    assert fold_sequence(["e@", "_:", "r"]) == [("EH", "R"), ("sil",), ("R",)]
    # The palatal glide is absorbed; stress marks are ignored.
    assert fold_sequence(["r", "i", ";", "'I", "N"]) == [("R",), ("IY",), (), ("IH",), ("NG",)]
    assert fold_phoneme(",aI") == ("AY",) and fold_phoneme("_!") == ("sil",)


def test_text_to_phones_matches_synthesis():
    sentences = load_sentences()
    for i, text in enumerate(sentences[1000:1160]):
        voice = ENGLISH_VOICES[i % 8]
        _, alignment, _ = synthesize(text, f"{voice}+{synth.DEFAULT_VARIANTS[i % 19]}",
                                     rate=140 + i % 60)
        assert [p for p, _, _ in alignment if p != "sil"] == text_to_phones(text, voice), (voice, text)


def test_align_phonemes_zero_length_and_multi_phone():
    events = [(100, "h"), (441, "e@"), (1323, "l"), (1323, "_:"), (2205, "_")]
    al = align_phonemes(events, 1600)
    assert [p for p, _, _ in al] == ["sil", "HH", "EH", "R", "L", "sil"]
    assert al[0] == ("sil", 0, 73) and al[-1] == ("sil", 960, 1600)
    assert al[1] == ("HH", 73, 320)
    # e@ spans [320, 960): EH R L share it evenly.
    assert [(b, e) for _, b, e in al[2:5]] == [(320, 533), (533, 746), (746, 960)]


# --- audio sanity ---------------------------------------------------------------------------

def test_labels_are_meaningful(corpus):
    """Frames labelled sil are much quieter than vowel frames, and speech starts right where
    a pause ends (the boundary convention)."""
    vowel_ids = [PHONE_TO_ID[v] for v in VOWELS]
    sil_db, vowel_db, rise = [], [], []
    for split in ("dev", "pretrain"):
        labels = read_frame_labels(corpus, split, "100hz")
        for u in read_manifest(corpus, split):
            x, _ = sf.read(str(corpus / u.path), dtype="float32")
            n = MFCC_FRAMES.num_frames(len(x))
            frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160][:n]
            db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)
            lab = labels[u.id]
            sil_db.extend(db[lab == 0])
            vowel_db.extend(db[np.isin(lab, vowel_ids)])
            for phone, b, e in u.alignment[1:-1]:
                if phone == "sil" and e - b >= 480:
                    before = np.mean(x[e - 160:e] ** 2) + 1e-10
                    after = np.mean(x[e:e + 160] ** 2) + 1e-10
                    rise.append(10 * np.log10(after / before))
    assert np.median(vowel_db) - np.median(sil_db) > 25
    assert len(rise) >= 5 and np.median(rise) > 15


def test_synthesize():
    audio, alignment, words = synthesize("Hello there, my friend.", "en-gb-x-rp+f2", rate=160, pitch=60)
    assert audio.dtype == np.float32 and audio.ndim == 1 and 0 < np.abs(audio).max() <= 1
    assert 0.8 < len(audio) / 16_000 < 3
    assert alignment[0][1] == 0 and alignment[-1][2] == len(audio)
    assert all(a[2] == b[1] for a, b in zip(alignment, alignment[1:]))
    assert words == ["HELLO", "THERE", "MY", "FRIEND"]
    assert [p for p, _, _ in alignment if p != "sil"][:4] == ["HH", "AH", "L", "OW"]


def test_resampler_matches_torchaudio():
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    resample = Resampler()
    rng = np.random.default_rng(0)
    for n in (1, 440, 441, 442, 22_050, 33_333):
        x = (rng.standard_normal(n) * 0.3).astype(np.float32)
        ref = torchaudio.functional.resample(torch.from_numpy(x)[None], 22_050, 16_000)[0].numpy()
        y = resample(x)
        assert y.shape == ref.shape
        assert np.abs(y - ref).max() < 1e-4
    t = np.arange(22_050) / 22_050
    y = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    spectrum = np.abs(np.fft.rfft(y[2000:14000] * np.hanning(12000)))
    assert abs(np.argmax(spectrum) * 16_000 / 12_000 - 1000) < 5


# --- errors ---------------------------------------------------------------------------------

def test_unknown_voice():
    with pytest.raises(SynthesisError, match=r"unknown voice 'xx-yy'.*en-us"):
        synthesize("Hello there.", "xx-yy")
    with pytest.raises(SynthesisError, match="en-gb-x-rp"):
        synthesize("Hello there.", "en-gb")
    with pytest.raises(SynthesisError, match=r"unknown voice variant 'nosuch'.*m3"):
        synthesize("Hello there.", "en-us+nosuch")


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text(text):
    with pytest.raises(EmptyTextError, match="empty"):
        synthesize(text)
    assert issubclass(EmptyTextError, SynthesisError) and issubclass(EmptyTextError, ValueError)


def test_rate_and_pitch_out_of_range():
    with pytest.raises(ConfigError, match="rate"):
        synthesize("Hello there.", rate=1000)
    with pytest.raises(ConfigError, match="pitch"):
        synthesize("Hello there.", pitch=-1)


def test_missing_library(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "libespeak-ng.so"
    monkeypatch.setenv(synth.LIBRARY_ENV, str(missing))
    with pytest.raises(SynthesisError) as err:
        EspeakNG()
    message = str(err.value)
    assert str(missing) in message and "pip install espeakng-loader" in message
    assert synth.LIBRARY_ENV in message


def test_missing_data(monkeypatch, tmp_path):
    monkeypatch.setenv(synth.DATA_ENV, str(tmp_path))
    with pytest.raises(SynthesisError, match=str(tmp_path)):
        EspeakNG()


@pytest.mark.parametrize("changes, field", [
    ({"pretrain_seconds": 0}, "pretrain_seconds"),
    ({"dev_seconds": -3}, "dev_seconds"),
    ({"finetune_1h_seconds": 100, "finetune_seconds": 600}, "finetune_1h_seconds"),
    ({"voices": ("en-us", "klingon")}, "voices"),
    ({"voices": ()}, "voices"),
    ({"variants": ("m1", "m1")}, "variants"),
    ({"rate_range": (300, 100)}, "rate_range"),
    ({"rate_range": (50, 100)}, "rate_range"),
    ({"pitch_range": (10, 200)}, "pitch_range"),
    ({"peak_range": (0.5, 1.5)}, "peak_range"),
    ({"unpaired_sentences": -1}, "unpaired_sentences"),
    ({"min_words": 8, "max_words": 4}, "max_words"),
    ({"sources": ("fortunes-o",)}, "sources"),
    ({"dev_speakers": 0}, "dev_speakers"),
    ({"variants": ("m1",)}, "variants"),
    ({"max_unpaired_fraction": 1.0}, "max_unpaired_fraction"),
])
def test_invalid_config(changes, field):
    with pytest.raises(ConfigError, match=rf"\.{field}: expected .* found"):
        SMALL.replace(**changes)


def test_invalid_preset_seed_workers_and_variant(tmp_path):
    with pytest.raises(ConfigError, match="preset"):
        generate_corpus(tmp_path / "x", "huge")
    with pytest.raises(ConfigError, match="seed"):
        generate_corpus(tmp_path / "x", SMALL, seed=-1)
    with pytest.raises(ConfigError, match="workers"):
        generate_corpus(tmp_path / "x", SMALL, workers=0)
    with pytest.raises(ConfigError, match=r"variants: .*nosuch"):
        generate_corpus(tmp_path / "x", SMALL.replace(variants=("m1", "m2", "nosuch")))
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite_other_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing"):
        generate_corpus(tmp_path, SMALL, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_failed_run_leaves_nothing(tmp_path):
    # Four-word sentences from one small file cannot fill a long dev split.
    config = SMALL.replace(sources=("startrek",), min_words=4, max_words=5, dev_seconds=100_000,
                           unpaired_sentences=0)
    with pytest.raises(ConfigError, match="dev_seconds"):
        generate_corpus(tmp_path / "c", config, workers=2, progress=False)
    assert not (tmp_path / "c").exists()
    assert not list(tmp_path.iterdir())


# --- reuse ----------------------------------------------------------------------------------

def test_ensure_corpus_reuses_matching_corpus(corpora):
    root = corpora["w1"]
    stamp = (root / "meta.json").stat().st_mtime_ns
    assert corpus_is_current(root, SMALL, SEED)
    assert ensure_corpus(root, SMALL, SEED) == root
    assert (root / "meta.json").stat().st_mtime_ns == stamp
    assert not corpus_is_current(root, SMALL, SEED + 1)
    assert not corpus_is_current(root, SMALL.replace(pretrain_seconds=41), SEED)
    assert not corpus_is_current(root, "tiny", SEED)


def test_ensure_corpus_regenerates_incomplete(tmp_path, corpora):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(corpora["w2"], root)
    assert corpus_is_current(root, SMALL, SEED)
    next(iter((root / "wav" / "dev").iterdir())).unlink()
    assert not corpus_is_current(root, SMALL, SEED)


def test_progress_switch(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("SPEECHSSL_PROGRESS", "1")
    assert _progress_enabled(True) and not _progress_enabled(False)
    monkeypatch.setenv("SPEECHSSL_PROGRESS", "0")
    assert not _progress_enabled(True)
    monkeypatch.delenv("SPEECHSSL_PROGRESS")
    monkeypatch.setenv("CI", "true")
    assert not _progress_enabled(True)


def test_summary_line(corpus):
    line = synth.summary(corpus, wall_seconds=2.0)
    assert "pretrain" in line and "speakers" in line and "x real time" in line
