"""HuBERT's iterations (``speechssl.hubert``): cached stages, labels tied to their corpus and teacher,
iteration 2 on a layer of iteration 1, and clear errors for a bad layer or K."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl.data.manifest import Utterance, write_manifest
from speechssl.errors import ConfigError
from speechssl.frames import MFCC_FRAMES, MODEL_FRAMES
from speechssl.hubert import ITERATIONS, Iteration, layer_featurizer, load_hubert
from speechssl.models.hubert import Hubert, HubertConfig
from speechssl.recipes import recipe
from speechssl.units import LabelError, UnitLabels

LIB = Path(__file__).resolve().parents[1] / "lib"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    utts = []
    for i in range(8):
        n = int(rng.integers(20_000, 36_000))
        sf.write(root / f"u{i}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16_000, subtype="FLOAT")
        utts.append(Utterance(id=f"u{i}", path=f"u{i}.wav", num_samples=n, speaker=f"s{i % 2}"))
    write_manifest(root, "pretrain", utts)
    return root, utts


def small(steps=3, **kw):
    return dict(max_steps=steps, log_every=1, max_batch_samples=64_000, crop_samples=16_000, **kw)


def test_iteration_1_labels_mfcc_frames_at_100_hz_and_trains(corpus, tmp_path):
    root, utts = corpus
    it = Iteration(tmp_path / "iter1", utts, root, num_classes=8, n_init=2)
    labels = it.labels()
    assert labels.rate == 100 and labels.num_classes == 8
    assert all(len(labels.labels[u.id]) == MFCC_FRAMES.num_frames(u.num_samples) for u in utts)
    assert sorted({int(v) for y in labels.labels.values() for v in y}) == list(range(8))   # every unit in use
    run = it.start(it.recipe("tiny", **small()))
    history = run.fit()
    assert [h["step"] for h in history] == [1, 2, 3] and all(np.isfinite(h["loss"]) for h in history)
    assert run.model.cfg.num_classes == (8,) and run.model.cfg.label_rate == 100


def test_stages_are_cached_and_reused(corpus, tmp_path):
    root, utts = corpus
    it = Iteration(tmp_path / "it", utts, root, num_classes=8, n_init=2)
    first = it.labels()
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "it").iterdir()}
    assert set(stamps) == {"features.pt", "kmeans.pt", "labels.npz"}
    again = Iteration(tmp_path / "it", utts, root, num_classes=8, n_init=2).labels()
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "it").iterdir()} == stamps   # nothing made again
    assert all(np.array_equal(first.labels[k], again.labels[k]) for k in first.labels)


def test_labels_of_another_corpus_or_teacher_are_refused(corpus, tmp_path):
    root, utts = corpus
    Iteration(tmp_path / "it", utts, root, num_classes=8, n_init=2).labels()
    with pytest.raises(LabelError, match="another corpus or teacher.*--overwrite"):
        Iteration(tmp_path / "it", utts[:-1], root, num_classes=8, n_init=2).labels()    # another corpus
    with pytest.raises(LabelError, match="another corpus or teacher"):
        Iteration(tmp_path / "it", utts, root, num_classes=6, n_init=2).labels()         # another K
    # a label file alone, with the right corpus but another teacher
    saved = UnitLabels.load(tmp_path / "it" / "labels.npz")
    (tmp_path / "other").mkdir()
    for name in ("features.pt", "kmeans.pt"):
        (tmp_path / "other" / name).write_bytes((tmp_path / "it" / name).read_bytes())
    UnitLabels(saved.labels, 8, 100, saved.corpus, "someone-else").save(tmp_path / "other" / "labels.npz")
    with pytest.raises(LabelError, match="another teacher"):
        Iteration(tmp_path / "other", utts, root, num_classes=8, n_init=2).labels()


def test_a_damaged_stage_file_is_named_not_a_traceback(corpus, tmp_path):
    root, utts = corpus
    Iteration(tmp_path / "it", utts, root, num_classes=8, n_init=2).labels()
    blob = (tmp_path / "it" / "kmeans.pt").read_bytes()
    (tmp_path / "it" / "kmeans.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(LabelError, match=r"kmeans.pt: cannot read these k-means: the file is truncated or corrupt.*--overwrite"):
        Iteration(tmp_path / "it", utts, root, num_classes=8, n_init=2).labels()


def test_iteration_2_clusters_a_layer_of_iteration_1_at_50_hz(corpus, tmp_path):
    root, utts = corpus
    it1 = Iteration(tmp_path / "iter1", utts, root, num_classes=8, n_init=2)
    it1.start(it1.recipe("tiny", **small(2))).fit()
    teacher = load_hubert(tmp_path / "iter1" / "model")
    assert isinstance(teacher, Hubert) and teacher.cfg.num_classes == (8,)
    it2 = Iteration(tmp_path / "iter2", utts, root, num_classes=5, teacher=teacher, layer=2, n_init=2)
    labels = it2.labels()
    assert labels.rate == 50 and labels.num_classes == 5
    assert all(len(labels.labels[u.id]) == MODEL_FRAMES.num_frames(u.num_samples) for u in utts)
    frames = it2.features()
    assert frames.shape[1] == teacher.cfg.embed_dim
    run = it2.start(it2.recipe("tiny", **small(2)))
    run.fit()
    assert run.model.cfg.label_rate == 50 and run.model.cfg.num_classes == (5,)
    # a different teacher model (other weights) is another teacher
    with torch.no_grad():
        teacher.final_proj.bias.add_(1.0)
        teacher.post_extract_proj.bias.add_(1.0)
    with pytest.raises(LabelError, match="another corpus or teacher"):
        Iteration(tmp_path / "iter2", utts, root, num_classes=5, teacher=teacher, layer=2, n_init=2).labels()


def test_lloyd_k_means_is_an_iteration_option_with_its_own_cache(corpus, tmp_path):
    """``kmeans="lloyd"`` fits the teacher with full passes to a stop (an inertia no higher than the paper's
    mini-batch fit's on the same frames), caches under its own fingerprint (the mini-batch centres of the same
    folder are another teacher), and an unknown algorithm is named."""
    root, utts = corpus
    lloyd = Iteration(tmp_path / "it", utts, root, num_classes=8, kmeans="lloyd")
    km, x = lloyd.kmeans(), lloyd.features()
    assert km.result_.converged
    minibatch = Iteration(tmp_path / "mb", utts, root, num_classes=8, n_init=2).kmeans()
    assert km.inertia(x) <= minibatch.inertia(x) * 1.001
    with pytest.raises(LabelError, match="another corpus or teacher"):
        Iteration(tmp_path / "it", utts, root, num_classes=8, n_init=2).kmeans()
    with pytest.raises(ConfigError, match=r"--kmeans: expected one of minibatch, lloyd, found 'elkan'"):
        Iteration(tmp_path / "x", utts, root, num_classes=8, kmeans="elkan")


def test_bad_layer_and_k_are_named(corpus, tmp_path):
    root, utts = corpus
    model = Hubert(HubertConfig.preset("tiny"))
    with pytest.raises(ConfigError, match=r"--layer: expected a Transformer layer from 0 to 4 \(the model has 4 "
                                          r"layers\), found 7"):
        layer_featurizer(model, 7)
    with pytest.raises(ConfigError, match="--layer"):
        Iteration(tmp_path / "x", utts, root, num_classes=8, teacher=model)              # a model without a layer
    with pytest.raises(ConfigError, match=r"--num-classes: k-means needs at least K=100000 frames, the teacher "
                                          r"gave \d+ on 8 utterances"):
        Iteration(tmp_path / "y", utts, root, num_classes=100_000, n_init=1).labels()
    with pytest.raises(ConfigError, match="--share"):
        Iteration(tmp_path / "z", utts, root, num_classes=8, share=0.0)


def test_a_share_fits_on_a_seeded_subset_of_utterances(corpus, tmp_path):
    root, utts = corpus
    it = Iteration(tmp_path / "s", utts, root, num_classes=4, share=0.3, n_init=1, seed=3)
    picked = it.fit_utterances()
    assert len(picked) == 3 and picked == Iteration(tmp_path / "s", utts, root, num_classes=4, share=0.3,
                                                    seed=3).fit_utterances()
    assert it.features().shape[0] == sum(MFCC_FRAMES.num_frames(u.num_samples) for u in picked)


def test_the_scales_follow_the_paper_at_full_scale():
    full = ITERATIONS["full"]
    assert (full[1].layer, full[1].num_classes, full[1].max_steps) == (None, 100, 250_000)    # Sec. IV-B/C
    assert (full[2].layer, full[2].num_classes, full[2].share, full[2].max_steps) == (6, 500, 0.1, 400_000)
    r = recipe("hubert", "full")
    assert (r.train.lr, r.train.grad_clip, r.model.mask_prob, r.model.mask_length) == (5e-4, 10.0, 0.8, 10)
    assert (r.model.feature_pen_weight, r.model.pred_masked_weight, r.model.pred_nomask_weight) == (10.0, 1.0, 0.0)
    for scale, plans in ITERATIONS.items():   # the default layer exists in the scale's model
        assert 0 <= plans[2].layer <= recipe("hubert", scale).model.num_layers


def run_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LIB), os.environ.get("PYTHONPATH", "")]),
           "SPEECHSSL_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "speechssl.hubert", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_the_command_names_a_bad_layer_without_a_traceback(tmp_path):
    proc = run_cli("--scale", "tiny", "--iteration", "1", "--layer", "3", "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: --layer/--teacher: iteration 1 clusters MFCC frames" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("--scale", "tiny", "--iteration", "2", "--teacher", str(tmp_path / "none"), "--out",
                   str(tmp_path / "b"), cwd=tmp_path)
    assert proc.returncode == 1 and "no checkpoint" in proc.stderr and "Traceback" not in proc.stderr


def test_iterations_run_the_scale_plans_and_reuse_finished_runs(corpus, tmp_path, monkeypatch):
    from speechssl import hubert
    from speechssl.hubert import IterationPlan, iterations

    root, utts = corpus
    monkeypatch.setenv("SPEECHSSL_RUNS", str(tmp_path))
    monkeypatch.setitem(hubert.ITERATIONS, "tiny", {1: IterationPlan(None, 6, 1.0, 2), 2: IterationPlan(1, 5, 0.5, 2)})
    runs = iterations("tiny", utts, root)
    assert [r.trainer.step for r in runs.values()] == [2, 2]
    assert (runs[1].model.cfg.label_rate, runs[2].model.cfg.label_rate) == (100, 50)
    assert (runs[1].model.cfg.num_classes, runs[2].model.cfg.num_classes) == ((6,), (5,))
    stamp = (tmp_path / "hubert-tiny" / "iter2" / "labels.npz").stat().st_mtime_ns
    again = iterations("tiny", utts, root)                     # everything is there: nothing is made or trained again
    assert (tmp_path / "hubert-tiny" / "iter2" / "labels.npz").stat().st_mtime_ns == stamp
    assert len(again[2].history) == len(runs[2].history)
    for a, b in zip(runs[2].model.state_dict().values(), again[2].model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_teacher_of_another_model_is_refused_by_name(tmp_path):
    """``load_hubert`` reads a HuBERT checkpoint back as the model it was, and names a wav2vec 2.0 checkpoint
    given as the teacher instead of loading it."""
    from test_wav2vec_u import save_encoder

    from speechssl.models import Wav2Vec2

    hubert = Hubert(recipe("hubert", "tiny").model).eval()
    loaded = load_hubert(save_encoder(tmp_path / "hubert.pt", "hubert", hubert))
    assert isinstance(loaded, Hubert) and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(hubert.state_dict().values(), loaded.state_dict().values()))
    path = save_encoder(tmp_path / "w2v2.pt", "wav2vec2", Wav2Vec2(recipe("wav2vec2", "tiny").model))
    with pytest.raises(ConfigError, match=r"--teacher .*w2v2.pt: expected a checkpoint of hubert, found one of "
                                          r"'wav2vec2'"):
        load_hubert(path)
