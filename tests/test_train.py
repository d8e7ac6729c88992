"""The training engine: exact resume, accumulation, clipping, non-finite values, DDP, CLI."""

import json
import math
import os
import socket
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import speechssl.train as train_mod
from ddp_worker import (
    MemoryDataset,
    PairedBatches,
    TinyConvModel,
    ddp_config,
    equal_length_items,
)
from speechssl.checkpoint import CheckpointError, load_checkpoint
from speechssl.data.dataset import LengthGroupedSampler
from speechssl.data.manifest import Utterance
from speechssl.errors import ConfigError
from speechssl.cli import parse_data_spec
from speechssl.engine import NonFiniteError, TrainConfig, Trainer, make_train_dataset, read_metrics
from speechssl.train import main

TESTS = Path(__file__).resolve().parent
LIB = str(TESTS.parent / "lib")


def write_corpus(folder: Path, n: int = 10, seed: int = 0) -> list[Utterance]:
    """``n`` wav files of 1200-3000 samples and their utterance records."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    utts = []
    for i in range(n):
        length = int(rng.integers(1200, 3000))
        t = np.arange(length) / 16000
        x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.05 * rng.standard_normal(length)
        sf.write(folder / f"u{i}.wav", x.astype(np.float32), 16000, subtype="FLOAT")
        utts.append(Utterance(id=f"u{i}", path=f"u{i}.wav", num_samples=length, speaker=f"s{i % 3}"))
    return utts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return write_corpus(root), root


def base_config(out_dir, **overrides):
    values = dict(
        model="tiny_conv", seed=7, max_steps=12, lr=1e-2, schedule="polynomial", warmup_steps=1,
        max_batch_samples=4000, crop_samples=1600, accum_steps=2, grad_clip=1.0,
        log_every=1, ckpt_every=6, keep_checkpoints=2, out_dir=str(out_dir),
    )
    values.update(overrides)
    return TrainConfig(**values)


def new_model(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyConvModel(**kw)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("lr", -1.0, "a finite number > 0.0"),
        ("lr", float("nan"), "a finite number > 0.0"),
        ("max_steps", 0, "an integer >= 1"),
        ("max_steps", 2.5, "an integer >= 1"),
        ("schedule", "linear", "one of ('cosine', 'polynomial', 'tri_stage', 'constant')"),
        ("precision", "fp8", "one of ('fp32', 'bf16', 'fp16', 'auto')"),
        ("accum_steps", 0, "an integer >= 1"),
        ("betas", (0.9,), "two numbers in [0, 1)"),
        ("tri_stage_ratios", (0.1, 0.4, 0.4), "3 fractions in [0, 1] summing to 1"),
        ("scale", "huge", "one of ('tiny', 'reduced', 'full')"),
        ("device", "tpu", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("model", "", "a non-empty model name"),
    ],
)
def test_config_errors_name_field_expected_and_found(field, value, expected):
    values = {"model": "m", field: value}
    with pytest.raises(ConfigError) as err:
        TrainConfig(**values)
    msg = str(err.value)
    assert f"TrainConfig.{field}" in msg and "expected" in msg and f"found {value!r}" in msg
    assert expected in msg


def test_config_cross_field_checks_and_round_trip():
    with pytest.raises(ConfigError, match="warmup_steps: expected at most max_steps=10, found 20"):
        TrainConfig(model="m", max_steps=10, warmup_steps=20)
    with pytest.raises(ConfigError, match="min_lr: expected below lr"):
        TrainConfig(model="m", schedule="cosine", lr=1e-3, min_lr=1e-3)
    with pytest.raises(ConfigError, match="crop_samples: expected at most max_batch_samples"):
        TrainConfig(model="m", max_batch_samples=1000, crop_samples=2000)
    with pytest.raises(ConfigError, match=r"unknown TrainConfig field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"model": "m", "learning_rate": 1.0})
    cfg = TrainConfig(model="m", betas=[0.9, 0.98], grad_clip=0)
    assert cfg.betas == (0.9, 0.98) and cfg.grad_clip is None
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(lr=1e-3).lr == 1e-3
    assert TrainConfig(model="m").warmup == 32_000  # 8% of 400k


# ----------------------------------------------------------------------------- exact resume


def losses_of(history):
    return [(r["step"], r["loss"], r["frame_err"], r["rand_py"], r["rand_np"], r["lr"], r["grad_norm"])
            for r in history]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_exact(tmp_path, corpus, num_workers):
    utts, root = corpus

    def run(out_dir, model_seed, **fit_kw):
        cfg = base_config(out_dir, num_workers=num_workers)
        ds = make_train_dataset(cfg, utts, root)
        model = new_model(model_seed, dropout=0.2, noisy_metrics=True)
        trainer = Trainer(model, cfg, ds)
        return trainer, trainer.fit(**fit_kw)

    full, hist_full = run(tmp_path / "full", 0)
    assert len(hist_full) == 12

    part, hist_part = run(tmp_path / "split", 0, stop_at=6)
    assert [r["step"] for r in hist_part] == list(range(1, 7))
    # Data position in the middle of an epoch, so that the resume must skip batches.
    state = load_checkpoint(tmp_path / "split" / "checkpoint_last.pt", model_name="tiny_conv")
    assert state["step"] == 6 and state["data"]["batch"] > 0
    # A new model (other initial weights) and a new trainer continue the run.
    resumed, hist_resumed = run(tmp_path / "split", 123, resume=True)

    assert losses_of(hist_resumed) == losses_of(hist_full)  # bitwise equal floats
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert read_metrics(tmp_path / "split") == hist_resumed
    for a, b in zip(full.optimizer.state_dict()["state"].values(),
                    resumed.optimizer.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_resume_after_a_crash_redoes_lost_metric_lines(tmp_path):
    ds = equal_length_items()
    cfg = base_config(tmp_path, crop_samples=None, max_batch_size=2, max_batch_samples=100_000,
                      accum_steps=1, ckpt_every=4, max_steps=10)
    Trainer(new_model(), cfg, ds).fit(stop_at=6)  # checkpoints at 4 and 6
    # Pretend the process died after step 6 was logged but before its checkpoint: resume at 4.
    hist = Trainer(new_model(1), cfg, ds).fit(resume=tmp_path / "checkpoint_4.pt")
    assert [r["step"] for r in hist] == list(range(1, 11))
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 11))


# ----------------------------------------------------------------------------- accumulation, clipping


class FixedBatches:
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter([list(b) for b in self.batches])

    def __len__(self):
        return len(self.batches)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    ds = equal_length_items(n=8)
    common = dict(crop_samples=None, max_batch_samples=100_000, grad_clip=None, max_steps=4,
                  ckpt_every=0, lr=3e-3)
    small = Trainer(new_model(), base_config(tmp_path / "a", accum_steps=2, **common), ds,
                    batch_sampler=FixedBatches([[0, 1], [2, 3], [4, 5], [6, 7]]))
    big = Trainer(new_model(), base_config(tmp_path / "b", accum_steps=1, **common), ds,
                  batch_sampler=FixedBatches([[0, 1, 2, 3], [4, 5, 6, 7]]))
    ha, hb = small.fit(), big.fit()
    assert [r["loss"] for r in ha] == pytest.approx([r["loss"] for r in hb], rel=1e-5)
    assert [r["grad_norm"] for r in ha] == pytest.approx([r["grad_norm"] for r in hb], rel=1e-4)
    for (k, a), b in zip(small.model.state_dict().items(), big.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    assert ds.epochs[:3] == [0, 1, 0]  # set_epoch called every epoch (second trainer restarts)


def _norm_at_step(trainer):
    seen = []

    def hook(opt, args, kwargs):
        grads = [p.grad for p in trainer.params if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    trainer.optimizer.register_step_pre_hook(hook)
    return seen


@pytest.mark.parametrize("clip", [None, 0.5])
def test_clipping_and_logged_pre_clip_norm(tmp_path, clip):
    ds = equal_length_items()
    cfg = base_config(tmp_path, crop_samples=None, max_batch_size=2, max_batch_samples=100_000,
                      accum_steps=1, max_steps=5, grad_clip=clip, ckpt_every=0)
    trainer = Trainer(new_model(loss_scale=300.0), cfg, ds)
    applied = _norm_at_step(trainer)
    logged = [r["grad_norm"] for r in trainer.fit()]
    assert min(logged) > 0.5  # the loss scale makes every gradient larger than the clip
    if clip is None:
        assert applied == pytest.approx(logged, rel=1e-5)
    else:
        assert applied == pytest.approx([clip] * 5, rel=1e-5)


# ----------------------------------------------------------------------------- non-finite values


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    ds = equal_length_items()
    cfg = base_config(tmp_path, crop_samples=None, max_batch_size=2, max_batch_samples=100_000,
                      accum_steps=1, max_steps=10, ckpt_every=2)
    with pytest.raises(NonFiniteError) as err:
        Trainer(new_model(nan_at=4), cfg, ds).fit()
    msg = str(err.value)
    assert "step 5 (num_updates=4" in msg and "loss is not finite" in msg and "nan" in msg
    assert "checkpoint_last.pt" in msg
    assert isinstance(err.value, FloatingPointError)
    state = load_checkpoint(tmp_path / "checkpoint_last.pt", model_name="tiny_conv")
    assert state["step"] == 4
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    # The run continues from it once the cause is fixed.
    hist = Trainer(new_model(), cfg, ds).fit(resume=True)
    assert hist[-1]["step"] == 10 and all(math.isfinite(r["loss"]) for r in hist)


def test_nan_gradient_names_the_parameter(tmp_path):
    ds = equal_length_items()
    cfg = base_config(tmp_path, crop_samples=None, max_batch_size=2, max_batch_samples=100_000,
                      accum_steps=1, max_steps=10, ckpt_every=0)
    with pytest.raises(NonFiniteError) as err:
        Trainer(new_model(nan_grad_at=2), cfg, ds).fit()
    msg = str(err.value)
    assert "step 3" in msg and "gradient norm is nan" in msg and "extra (nan)" in msg
    assert "conv.weight" not in msg
    assert "no checkpoint was saved" in msg


# ----------------------------------------------------------------------------- bad input


def test_empty_dataset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="training dataset is empty"):
        Trainer(new_model(), base_config(tmp_path), MemoryDataset([]))


def test_empty_batch_is_refused(tmp_path):
    ds = equal_length_items()
    trainer = Trainer(new_model(), base_config(tmp_path, accum_steps=1), ds, batch_sampler=FixedBatches([[]]))
    with pytest.raises(ConfigError, match="empty batch"):
        trainer.fit()


def test_bad_loss_contract_is_explained(tmp_path):
    class Detached(TinyConvModel):
        def compute_loss(self, batch, num_updates):
            loss, m = super().compute_loss(batch, num_updates)
            return loss.detach(), m

    ds = equal_length_items()
    cfg = base_config(tmp_path, accum_steps=1, crop_samples=None)
    with pytest.raises(ConfigError, match="does not require grad"):
        Trainer(Detached(), cfg, ds).fit()
    with pytest.raises(ConfigError, match="no compute_loss"):
        Trainer(torch.nn.Linear(2, 2), base_config(tmp_path), ds)


def test_resume_from_another_models_checkpoint_is_refused(tmp_path):
    ds = equal_length_items()
    cfg = base_config(tmp_path, crop_samples=None, accum_steps=1, max_steps=2)
    Trainer(new_model(), cfg, ds).fit()
    other = cfg.replace(model="hubert")
    with pytest.raises(CheckpointError, match="checkpoint of model 'tiny_conv', not of model 'hubert'"):
        Trainer(new_model(), other, ds).fit(resume=True)
    with pytest.raises(CheckpointError, match="another configuration"):
        Trainer(new_model(channels=4), cfg, ds).fit(resume=True)


def test_run_folder_protection(tmp_path):
    ds = equal_length_items()
    cfg = base_config(tmp_path, crop_samples=None, accum_steps=1, max_steps=2)
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        Trainer(new_model(), cfg, ds).fit(resume=True)
    assert len(Trainer(new_model(), cfg, ds).fit(resume="auto")) == 2
    with pytest.raises(ConfigError, match="already holds a run of 'tiny_conv'"):
        Trainer(new_model(), cfg, ds).fit()
    hist = Trainer(new_model(), cfg.replace(max_steps=3), ds).fit(overwrite=True)
    assert [r["step"] for r in hist] == [1, 2, 3]
    assert Trainer(new_model(), cfg.replace(max_steps=3), ds).fit(resume=True) == hist  # nothing to do


# ----------------------------------------------------------------------------- metrics, precision


def test_metrics_jsonl(tmp_path):
    ds = equal_length_items()
    cfg = base_config(tmp_path, crop_samples=None, accum_steps=1, max_steps=7, log_every=3, ckpt_every=0)
    hist = Trainer(new_model(), cfg, ds).fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records == hist and [r["step"] for r in records] == [3, 6, 7]
    for r in records:
        for key in ("step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "utterances_per_s",
                    "time", "frame_err", "num_updates_seen"):
            assert key in r
        assert isinstance(r["frame_err"], float) and r["samples_per_s"] > 0
    assert records[0]["num_updates_seen"] == 1.0  # mean of 0, 1, 2
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == ["checkpoint_7.pt", "checkpoint_last.pt"]


def test_reduced_precision_runs_fp32_on_cpu(tmp_path):
    ds = equal_length_items()
    cfg = base_config(tmp_path, crop_samples=None, accum_steps=1, max_steps=2, precision="fp16", device="cpu")
    with pytest.warns(UserWarning, match="applies on CUDA only"):
        trainer = Trainer(new_model(), cfg, ds)
    assert not trainer.scaler.is_enabled() and trainer.amp_dtype is None
    assert all(math.isfinite(r["loss"]) for r in trainer.fit())


def test_auto_precision_is_fp32_on_cpu_without_a_warning(tmp_path, recwarn):
    cfg = base_config(tmp_path, crop_samples=None, accum_steps=1, max_steps=1, precision="auto", device="cpu")
    trainer = Trainer(new_model(), cfg, equal_length_items())
    assert trainer.amp_dtype is None and not trainer.scaler.is_enabled()
    assert not [w for w in recwarn if "CUDA only" in str(w.message)]


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                               ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_precision_follows_the_gpu(monkeypatch, capability, dtype):
    """T4 (7.5) and V100 (7.0) get fp16 with a loss scale; A100 (8.0) and H100 (9.0) get bf16."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    fake = types.SimpleNamespace(device=torch.device("cuda", 0))
    assert Trainer._resolve_precision(fake, "auto") == dtype


# ----------------------------------------------------------------------------- DDP


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_process_on_the_doubled_batch(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([LIB, str(TESTS)]), WORLD_SIZE="2", RANK=str(rank),
            LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
            OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", SPEECHSSL_PROGRESS="0",
        )
        procs.append(subprocess.Popen(
            [sys.executable, str(TESTS / "ddp_worker.py"), str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    try:
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text

    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for k in ranks[0]["params"]:
        assert torch.equal(ranks[0]["params"][k], ranks[1]["params"][k]), k
    assert ranks[0]["sampler_len"] == 2  # 4 batches per epoch, sharded over 2 ranks
    # Only rank 0 writes: one line per update, one set of checkpoints.
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 7))
    assert load_checkpoint(out, model_name="tiny_conv")["world_size"] == 2

    # One process, the union of both ranks' batches each update.
    ds = equal_length_items()
    cfg = ddp_config(str(tmp_path / "single"))
    sampler = LengthGroupedSampler(ds.sizes, cfg.max_batch_samples, max_batch_size=2, seed=cfg.seed,
                                   num_replicas=1, rank=0)
    torch.manual_seed(0)
    model = TinyConvModel()
    hist = Trainer(model, cfg, ds, batch_sampler=PairedBatches(sampler)).fit()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ranks[0]["params"][k], v, rtol=0, atol=1e-5, msg=k)
    assert [r["loss"] for r in ranks[0]["history"]] == pytest.approx([r["loss"] for r in hist], rel=1e-5)


# ----------------------------------------------------------------------------- command line


def test_parse_data_spec():
    assert parse_data_spec("synth") == ("synth", None)
    assert parse_data_spec("librispeech:/data/LS") == ("librispeech", Path("/data/LS"))
    for bad, msg in [("timit", "expected 'synth' or 'librispeech:PATH'"),
                     ("librispeech", "expected 'librispeech:PATH'"),
                     ("librispeech:", "no path")]:
        with pytest.raises(ConfigError, match=msg):
            parse_data_spec(bad)


@dataclass
class TinyConvConfig:
    channels: int = 8


@pytest.fixture
def fake_recipe(monkeypatch):
    """A recipe ``tiny_conv`` for a tiny convolutional model, registered for the pre-training command."""
    from speechssl import recipes

    built = []

    def build(r):
        built.append(r.scale)
        return new_model(channels=r.model.channels)

    train = {"lr": 1e-3, "max_steps": 50, "max_batch_samples": 4000, "crop_samples": 1600, "log_every": 1,
             "schedule": "cosine", "warmup_steps": 1}
    spec = recipes._Spec(lambda scale: TinyConvConfig(), {s: train for s in recipes.SCALES},
                         recipes._derive_warmup, build)
    monkeypatch.setitem(recipes.RECIPES, "tiny_conv", spec)
    monkeypatch.setattr(train_mod, "PRETRAINING", ("tiny_conv",))
    return built


def test_cli_unknown_model_lists_the_models(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["wav2vec9", "--data", "synth"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "invalid choice: 'wav2vec9'" in err and "'wav2vec2'" in err


def test_cli_help_lists_models_and_scales(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "models: wav2vec, vq_wav2vec, vq_wav2vec_kmeans, wav2vec2" in out and "scales: tiny, reduced, full" in out
    assert "--warmup-steps" in out and "--batch-seconds" in out and "--crop-seconds" in out and "--audio-ext" in out


def test_cli_bad_data_string(fake_recipe, capsys):
    assert main(["tiny_conv", "--data", "s3://bucket"]) == 2
    assert "--data: expected 'synth' or 'librispeech:PATH', found 's3://bucket'" in capsys.readouterr().err


def test_cli_bad_scale_is_an_argparse_error(fake_recipe, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tiny_conv", "--scale", "huge"])
    assert exc.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_cli_options_are_recipe_overrides(fake_recipe):
    from speechssl.cli import recipe_overrides
    from speechssl.recipes import recipe

    args = train_mod.build_arg_parser().parse_args(
        ["tiny_conv", "--scale", "reduced", "--max-steps", "7", "--seed", "3", "--out", "/tmp/x",
         "--batch-seconds", "0.5", "--crop-seconds", "0.1", "--warmup-steps", "2"])
    cfg = recipe("tiny_conv", "reduced", **recipe_overrides(args)).train
    assert (cfg.model, cfg.scale, cfg.max_steps, cfg.seed, cfg.lr, cfg.schedule, cfg.out_dir) == (
        "tiny_conv", "reduced", 7, 3, 1e-3, "cosine", "/tmp/x")
    assert (cfg.max_batch_samples, cfg.crop_samples, cfg.warmup_steps) == (8000, 1600, 2)
    assert recipe("tiny_conv", "tiny", max_steps=10).train.warmup_steps == 0          # 1 of 50, kept in proportion
    with pytest.raises(ConfigError, match=r"recipe\('tiny_conv', 'reduced'\): unknown setting\(s\) \['learning_rate'\]"):
        recipe("tiny_conv", "reduced", learning_rate=1.0)
    args = train_mod.build_arg_parser().parse_args(["tiny_conv", "--resume", "auto"])
    assert args.resume == "auto"
    assert train_mod.build_arg_parser().parse_args(["tiny_conv", "--resume"]).resume is True


def test_cli_trains_and_resumes(fake_recipe, corpus, tmp_path, monkeypatch, capsys):
    utts, root = corpus
    seen = {}

    def fake_split(r, data, subsets, default, info, **kwargs):
        seen["args"] = (data, r.scale, list(subsets), default)
        return [(subsets[0], utts)], root, "letters"

    monkeypatch.setattr(train_mod, "load_split", fake_split)
    out = tmp_path / "run"
    argv = ["tiny_conv", "--scale", "tiny", "--data", "librispeech:/data/LS", "--subsets", "dev-clean",
            "--out", str(out), "--max-steps", "3"]
    assert main(argv) == 0
    assert seen["args"] == ("librispeech:/data/LS", "tiny", ["dev-clean"], "pretrain")
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    assert main(argv) == 2  # the folder holds a run: refuse to overwrite it silently
    assert "already holds a run" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="max_steps: 3 -> 5"):
        assert main(argv[:-1] + ["5", "--resume"]) == 0
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5]
    assert fake_recipe == ["tiny", "tiny", "tiny"]


def test_cli_drops_utterances_shorter_than_the_model_needs(fake_recipe, corpus, tmp_path, monkeypatch, capsys,
                                                          caplog):
    from speechssl import recipes

    utts, root = corpus
    lengths = sorted(u.num_samples for u in utts)
    monkeypatch.setattr(train_mod, "load_split", lambda *a, **k: ([("pretrain", utts)], root, "phones"))
    spec = recipes.RECIPES["tiny_conv"]
    minimum = {}

    def build_with_minimum(r):
        model = new_model()
        model.min_input_samples = minimum["n"]
        return model

    monkeypatch.setitem(recipes.RECIPES, "tiny_conv", recipes._Spec(spec.model, spec.train, spec.derive,
                                                                    build_with_minimum))
    minimum["n"] = lengths[1]
    with caplog.at_level("INFO", logger="speechssl.engine"):
        assert main(["tiny_conv", "--out", str(tmp_path / "a"), "--max-steps", "1"]) == 0
    assert f"dropped 1 of {len(utts)} utterances shorter than {lengths[1]} samples" in caplog.text
    minimum["n"] = lengths[-1] + 1
    assert main(["tiny_conv", "--out", str(tmp_path / "b"), "--max-steps", "1"]) == 2
    assert f"shorter than the model's minimum of {lengths[-1] + 1} samples" in capsys.readouterr().err
