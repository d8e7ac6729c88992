"""One recipe per (model, scale): the model's configuration, the run's settings and the corpus.

``recipe(name, scale, **overrides)`` builds a :class:`Recipe` in three steps:

1. the scale's entry of the model's table below, every value citing its source (the paper or
   fairseq at ``full`` scale; a measured calibration at ``tiny``);
2. the overrides, each a field of the model configuration or of :class:`~speechssl.engine.TrainConfig`
   (``max_steps=2000``, ``lr=1e-3``, ``mask_length=10`` ...);
3. the schedule lengths derived from the *final* number of updates, so that a shorter or longer run
   keeps the paper's proportions: warm-ups and the fine-tuning freeze scale with ``max_steps``, the
   Gumbel temperature reaches its floor at the same share of the run (vq-wav2vec Sec. 5.2: 70%;
   wav2vec 2.0 Sec. 4.2: a decay of 0.999995 per update, which reaches 0.5 at 69.3% of 400k updates).
   A derived field that is overridden keeps the override.

The scales: ``tiny`` (2 CPU cores, minutes; what CI runs), ``reduced`` (one GPU) and ``full`` (the
paper's configuration, on LibriSpeech, under ``torchrun``). ``max_batch_samples`` is per GPU (fairseq
``max_tokens``); ``grad_clip = 0.0`` is no clipping (fairseq ``clip_norm`` default 0).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import paths
from .engine.config import TrainConfig
from .errors import ConfigError
from .models.ctc import CTCConfig, Wav2Vec2CTC
from .models.hubert import Hubert, HubertConfig
from .models.unit_bert import UnitBert, UnitBertConfig
from .models.vq_wav2vec import VQWav2Vec, VQWav2VecConfig
from .models.wav2vec import Wav2Vec, Wav2VecConfig
from .models.wav2vec2 import Wav2Vec2, Wav2Vec2Config

__all__ = ["CORPUS", "CTC_LARGE", "CTC_MODES", "LARGE_SHAPE", "PRETRAINING", "RECIPES", "Recipe", "ctc_recipe",
           "recipe"]

SCALES = paths.SCALES
#: The synthetic corpus of each scale. At ``full`` scale the chapters read the reduced corpus; the
#: paper-scale runs go through the command line on LibriSpeech (``--data librispeech:PATH``).
CORPUS = {"tiny": "tiny", "reduced": "reduced", "full": "reduced"}
#: Bookkeeping of a run at each scale: metric lines and checkpoints.
_RUN = {"tiny": {"log_every": 10, "ckpt_every": 0}, "reduced": {"log_every": 100, "ckpt_every": 1000},
        "full": {"log_every": 500, "ckpt_every": 5000}}
#: The three rows of the fine-tuning chapter: fine-tune a pre-trained encoder, train the same
#: architecture from scratch, or train only a linear CTC layer on frozen pre-trained features.
CTC_MODES = ("finetune", "scratch", "probe")


@dataclass(frozen=True)
class Recipe:
    """A model at a scale: ``model`` (its configuration), ``train`` (the run) and ``corpus``."""

    name: str
    scale: str
    model: Any
    train: TrainConfig
    corpus: str

    def build(self, **kwargs: Any) -> nn.Module:
        """The model, freshly initialised (seed first for reproducible weights). CTC recipes take
        ``vocab`` and, except ``scratch``, ``pretrained`` (a wav2vec2 checkpoint or run folder)."""
        return RECIPES[self.name].build(self, **kwargs)

    @property
    def corpus_dir(self) -> Path:
        """Folder of the recipe's synthetic corpus (``data/synth-<preset>``)."""
        return paths.corpus_dir(self.corpus)


@dataclass(frozen=True)
class _Spec:
    """A model's tables: model configuration and training settings per scale, derivation, builder."""

    model: Callable[[str], Any]
    train: Mapping[str, Mapping[str, Any]]
    derive: Callable[[Any, dict, int, set], Any]
    build: Callable[..., nn.Module]
    required: tuple[str, ...] = ()   # settings without a default (they come from the data)


def _scaled(value: int, base_steps: int, steps: int) -> int:
    """A schedule length of ``value`` updates in a run of ``base_steps``, kept proportional in ``steps``."""
    return int(round(value * steps / base_steps))


# wav2vec / vq-wav2vec ------------------------------------------------------------------------------

_ADAM = {"weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8}  # fairseq Adam defaults, no weight decay

_WAV2VEC_TRAIN = {
    "full": {  # wav2vec Sec. 3.3: warm-up over 500 updates to 5e-3, cosine to 1e-6, 400k updates on 8 GPUs
        "lr": 5e-3, "schedule": "cosine", "warmup_steps": 500, "min_lr": 1e-6, "max_steps": 400_000,
        "max_batch_samples": 1_500_000, "crop_samples": 150_000, "grad_clip": 0.0, **_ADAM,
    },
    "reduced": {  # one GPU, tens of minutes: 20k updates of 40 s of audio (about 220 h seen)
        "lr": 1e-3, "schedule": "cosine", "warmup_steps": 500, "min_lr": 1e-6, "max_steps": 20_000,
        "max_batch_samples": 640_000, "crop_samples": 80_000, "grad_clip": 0.0, **_ADAM,
    },
    "tiny": {  # 2 CPU cores: 400 updates of 8 crops of 2 s (1.8 h of audio, about 4.5 passes over 24 min);
               # lr 3e-4 with predictor_lr_scale=30 in the tiny presets
        "lr": 3e-4, "schedule": "cosine", "warmup_steps": 30, "min_lr": 1e-5, "max_steps": 400,
        "max_batch_samples": 256_000, "crop_samples": 32_000, "grad_clip": 0.0, **_ADAM,
    },
}
#: vq-wav2vec Sec. 5.2: the same optimiser and schedule as wav2vec (10 crops of 150k samples per GPU).
_VQ_WAV2VEC_TRAIN = _WAV2VEC_TRAIN
#: Share of the updates over which the Gumbel temperature falls from 2 to 0.5 (vq-wav2vec Sec. 5.2).
ANNEAL_FRACTION = 0.7
_PAPER_PRESET = {"tiny": "tiny", "reduced": "reduced", "full": "paper"}


def _derive_warmup(model: Any, train: dict, base_steps: int, overridden: set) -> Any:
    if "warmup_steps" not in overridden:
        train["warmup_steps"] = _scaled(train["warmup_steps"], base_steps, train["max_steps"])
    return model


def _derive_vq(model: VQWav2VecConfig, train: dict, base_steps: int, overridden: set) -> VQWav2VecConfig:
    if "anneal_updates" not in overridden:
        model = dataclasses.replace(model, anneal_updates=int(round(ANNEAL_FRACTION * train["max_steps"])))
    return _derive_warmup(model, train, base_steps, overridden)


# wav2vec 2.0 ---------------------------------------------------------------------------------------

_W2V2_OPT = {"schedule": "polynomial", "warmup_fraction": 0.08, "min_lr": 0.0, "betas": (0.9, 0.98), "eps": 1e-6,
             "weight_decay": 0.01}  # Sec. 4.2: Adam, warm-up over 8% of the updates, then linear decay to 0
_WAV2VEC2_TRAIN = {
    "full": {  # Sec. 4.2 BASE; fairseq wav2vec2_base_librispeech.yaml: 400k updates of 1.4M samples on 64 GPUs
        "lr": 5e-4, "max_steps": 400_000, "max_batch_samples": 1_400_000, "crop_samples": 250_000, "grad_clip": 0.0,
        "precision": "auto", **_W2V2_OPT,   # fairseq trains in fp16; bf16 (no loss scale) where the GPU has it
    },
    "reduced": {"lr": 5e-4, "max_steps": 40_000, "max_batch_samples": 3_200_000, "crop_samples": 160_000,
                "grad_clip": 0.0, "precision": "auto", **_W2V2_OPT},   # one GPU: 40k updates of 200 s of audio
    "tiny": {  # 2 CPU cores, about 2.5 minutes: 600 updates of 4 crops of 3 s (149 frames, enough for 100
               # distractors); a higher peak rate than the paper's for so few updates
        "lr": 2e-3, "max_steps": 600, "max_batch_samples": 192_000, "crop_samples": 48_000, "grad_clip": 0.0,
        **_W2V2_OPT,
    },
}
#: The paper decays the Gumbel temperature by 0.999995 per update from 2 to 0.5 (Sec. 4.2), which reaches the
#: floor after ln(4) / -ln(0.999995) = 277k of the 400k updates: this share of any run.
W2V2_ANNEAL_FRACTION = math.log(2.0 / 0.5) / -math.log(0.999995) / 400_000
_W2V2_PRESET = {"tiny": "tiny", "reduced": "reduced", "full": "base"}


def _derive_wav2vec2(model: Wav2Vec2Config, train: dict, base_steps: int, overridden: set) -> Wav2Vec2Config:
    if "temp_decay" in overridden:
        return model
    floor_at = W2V2_ANNEAL_FRACTION * train["max_steps"]
    return dataclasses.replace(model, temp_decay=(model.min_temp / model.max_temp) ** (1.0 / floor_at))


# CTC fine-tuning -----------------------------------------------------------------------------------

_CTC_OPT = {"schedule": "tri_stage", "tri_stage_ratios": (0.1, 0.4, 0.5), "init_lr_scale": 0.01, "final_lr_scale": 0.05,
            "crop_samples": None, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.0}
_CTC_TRAIN = {
    "full": {  # fairseq examples/wav2vec/config/finetuning/base_10m.yaml (10 minutes of labels): lr 5e-5,
               # 13k updates, max_tokens 3.2M per GPU with update_freq 4 on 2 GPUs; whole utterances
        "lr": 5e-5, "max_steps": 13_000, "max_batch_samples": 3_200_000, "accum_steps": 4, "grad_clip": 0.0,
        "precision": "auto", **_CTC_OPT,
    },
    "reduced": {"lr": 1e-4, "max_steps": 4_000, "max_batch_samples": 1_600_000, "grad_clip": 0.0, "precision": "auto",
                **_CTC_OPT},   # one GPU, tens of minutes: 4k updates of 100 s of audio
    "tiny": {  # 2 CPU cores: 600 updates of 10 s of audio (about 10 passes over the 10 minutes). lr 1e-3: 5e-4
               # fine-tuned more slowly (dev PER 0.79 against 0.74 with heavier masks), 2e-3 left both fine-tuning
               # and training from scratch on the all-blank plateau. The Transformer is unfrozen at the peak
               # rate (the paper unfreezes it late in the decay, near 1e-5); without clipping fine-tuning stayed
               # on the plateau for one of two pre-trained checkpoints (dev PER 0.96), with the gradient norm
               # clipped at 1 the dev PER was 0.53, 0.58 and 0.54 on three checkpoints, and clipping lowered it
               # for the other rows too (from scratch 0.50 -> 0.40, probe 0.67 -> 0.64).
        "lr": 1e-3, "max_steps": 600, "max_batch_samples": 160_000, "grad_clip": 1.0, **_CTC_OPT,
    },
}
#: Learning-rate factor of the linear probe, which trains one linear layer (this book's choice, not the
#: paper's). Tiny dev PER: 0.67 at 10x against 0.84 at 3x; 30x was no better than 10x.
PROBE_LR_FACTOR = 10.0
_CTC_MODEL = {
    "full": CTCConfig(),   # the defaults are base_10m.yaml's
    # reduced and tiny: channel spans scaled with the width (64 of 768 channels in BASE)
    "reduced": CTCConfig(freeze_updates=3_000, mask_channel_length=32),
    # tiny: 600 updates underfit, so masking is lighter (dev PER of the fine-tuned model: 0.55 without
    # masks, 0.60 with 10%/10%, 0.70 with 30% of time steps and 25% of channels, without gradient clipping)
    "tiny": CTCConfig(freeze_updates=100, mask_prob=0.1, mask_length=3, mask_channel_prob=0.1,
                      mask_channel_length=16),
}


def _ctc_model(mode: str) -> Callable[[str], CTCConfig]:
    def config(scale: str) -> CTCConfig:
        base = _CTC_MODEL[scale]
        if mode == "scratch":  # a random encoder that never learned would be no baseline: train it all
            return dataclasses.replace(base, freeze_updates=0, train_feature_encoder=True)
        if mode == "probe":
            return dataclasses.replace(base, freeze_updates=0, linear_probe=True)
        return base
    return config


def _derive_ctc(model: CTCConfig, train: dict, base_steps: int, overridden: set) -> CTCConfig:
    if "freeze_updates" not in overridden:
        model = dataclasses.replace(model, freeze_updates=_scaled(model.freeze_updates, base_steps, train["max_steps"]))
    if not model.linear_probe and model.freeze_updates >= train["max_steps"]:
        warnings.warn(f"freeze_updates={model.freeze_updates} is not below max_steps={train['max_steps']}: the "
                      f"Transformer is never unfrozen, and only the output layer learns", stacklevel=4)
    return model


#: Fields of a HuBERT configuration that belong to its pre-training targets, not to the encoder: they come from
#: the checkpoint (an iteration's K and label rate, an alpha ablation's weights); the rest must be the scale's.
_HUBERT_TARGET_FIELDS = ("num_classes", "label_rate", "pred_masked_weight", "pred_nomask_weight")


#: fairseq ``vox_10m.yaml``, wav2vec 2.0's 10-minute fine-tuning of its LARGE models, differs from ``base_10m.yaml``
#: (the ``full`` entry) in twice the peak rate and in 1.28M samples per GPU with ``update_freq 5`` on 4 GPUs, the same
#: 25.6M samples per update as BASE's 3.2M x 4 x 2 (and in ``normalize: true``, which the checkpoint records). The
#: full scale fine-tunes any encoder of LARGE's shape with these settings, HuBERT LARGE included.
CTC_LARGE = {"lr": 1e-4, "max_batch_samples": 1_280_000, "accum_steps": 5}
#: (width, Transformer layers) of the LARGE encoders of wav2vec 2.0 and HuBERT.
LARGE_SHAPE = (1024, 24)


def _is_large(saved: Mapping) -> bool:
    return (saved.get("embed_dim"), saved.get("num_layers")) == LARGE_SHAPE


def ctc_recipe(mode: str, scale: str, pretrained: str | Path | None = None, **overrides: Any) -> Recipe:
    """The recipe ``wav2vec2_ctc_<mode>`` at ``scale`` for the pre-trained checkpoint at ``pretrained``: at full scale
    a LARGE encoder takes :data:`CTC_LARGE` (its rate times the mode's factor), and every run reads the waveforms
    as the checkpoint's model was pre-trained on them (``normalize``); ``overrides`` come last."""
    from .checkpoint import load_checkpoint, normalizes_input

    settings: dict[str, Any] = {}
    if pretrained is not None and mode != "scratch":
        state = load_checkpoint(pretrained, purpose="load the pre-trained model", mmap=True)   # its settings only
        if scale == "full" and _is_large(state.get("model_config") or {}):
            settings = {**CTC_LARGE, "lr": CTC_LARGE["lr"] * _lr_factor(mode, scale)}
        settings["normalize"] = normalizes_input(state)
    return recipe(f"wav2vec2_ctc_{mode}", scale, **{**settings, **overrides})


def _build_ctc(r: Recipe, *, vocab, pretrained: str | Path | None = None) -> Wav2Vec2CTC:
    """A CTC model of ``r``: a random wav2vec 2.0 encoder (scratch), or the encoder of a pre-trained wav2vec 2.0 or
    HuBERT checkpoint (fairseq fine-tunes both the same way: ``wav2vec_ctc`` and ``hubert_ctc``, HuBERT Sec. IV-D).
    The encoder must be the scale's, or at full scale of LARGE's shape (rebuilt from its own configuration; see
    :func:`ctc_recipe` for its settings). The model's ``normalize_waveform`` is the checkpoint's
    (:func:`~speechssl.checkpoint.normalizes_input`): :func:`speechssl.finetune.transcribed` standardises the
    waveforms it reads when it is true."""
    from .checkpoint import check_model_config, load_checkpoint, model_config_of, normalizes_input

    mode = r.name.rsplit("_", 1)[-1]
    if mode == "scratch":
        if pretrained is not None:
            raise ConfigError("--pretrained: a model trained from scratch takes no pre-trained checkpoint")
        return Wav2Vec2CTC(Wav2Vec2(recipe("wav2vec2", r.scale).model), vocab, r.model)
    if pretrained is None:
        raise ConfigError(f"--pretrained: mode {mode!r} needs a wav2vec2 or hubert checkpoint or run folder, found none")
    purpose = "load the pre-trained model"
    state = load_checkpoint(pretrained, purpose=purpose)
    name, saved = state.get("model_name"), state.get("model_config") or {}
    if name in ("wav2vec2", "hubert") and r.scale == "full" and _is_large(saved):
        config_cls, model_cls = (Wav2Vec2Config, Wav2Vec2) if name == "wav2vec2" else (HubertConfig, Hubert)
        encoder = model_cls(config_cls(**saved))
    elif name == "wav2vec2":
        # the temperature schedule follows the pre-training run's length; every other field must be the scale's
        cfg = recipe("wav2vec2", r.scale).model
        encoder = Wav2Vec2(dataclasses.replace(cfg, temp_decay=saved.get("temp_decay", cfg.temp_decay)))
    elif name == "hubert":
        cfg = recipe("hubert", r.scale).model
        encoder = Hubert(dataclasses.replace(cfg, **{f: saved[f] for f in _HUBERT_TARGET_FIELDS if f in saved}))
    else:
        raise ConfigError(f"--pretrained {pretrained}: expected a checkpoint of wav2vec2 or hubert, found one of {name!r}")
    check_model_config(state, model_config_of(encoder, primitive=False), source=str(pretrained), purpose=purpose)
    encoder.load_state_dict(state["model"])
    model = Wav2Vec2CTC(encoder, vocab, r.model)
    model.normalize_waveform = normalizes_input(state)
    return model


#: At tiny scale the pre-trained row fine-tunes at half the peak rate of the other rows. Its Transformer is
#: unfrozen at the peak rate, and at 1e-3 one of two pre-trained checkpoints (seeds 0 and 1, 600 updates each)
#: stayed on the all-blank plateau (dev PER 0.94; the other 0.54); at 5e-4 neither did (0.64 and 0.61).
FINETUNE_LR_FACTOR = {"tiny": 0.5}


def _lr_factor(mode: str, scale: str) -> float:
    """The peak rate of CTC ``mode`` at ``scale`` relative to training from scratch."""
    if mode == "probe":
        return PROBE_LR_FACTOR
    return FINETUNE_LR_FACTOR.get(scale, 1.0) if mode == "finetune" else 1.0


def _ctc_train(mode: str) -> dict[str, dict]:
    return {s: {**t, "lr": t["lr"] * _lr_factor(mode, s)} for s, t in _CTC_TRAIN.items()}


# HuBERT ---------------------------------------------------------------------------------------------

#: HuBERT trains as wav2vec 2.0 does (Sec. IV-C: Adam, lr 5e-4 for BASE, warm-up over 8% of the updates,
#: linear decay), with the gradient norm clipped at 10 (hubert_base_librispeech.yaml ``clip_norm``). The
#: first iteration's 250k updates are the ``full`` entry; :mod:`speechssl.hubert` sets each iteration's.
_HUBERT_TRAIN = {
    # 1.4M samples per GPU on 32 GPUs (Sec. IV-C: 87.5 s per GPU); crops of at most 250k samples
    "full": {**_WAV2VEC2_TRAIN["full"], "max_steps": 250_000, "grad_clip": 10.0},
    "reduced": {**_WAV2VEC2_TRAIN["reduced"], "grad_clip": 10.0},
    # 2 CPU cores: chapter 3's budget (600 updates of 4 crops of 3 s) and peak rate
    "tiny": {**_WAV2VEC2_TRAIN["tiny"], "grad_clip": 10.0},
}


# unit BERT -----------------------------------------------------------------------------------------

#: A "sample" is one unit token: ``max_batch_samples`` is the token budget of a batch (fairseq ``--max-tokens``)
#: and ``crop_samples`` the longest sequence. fairseq's polynomial_decay with power 1 is the paper's linear
#: warm-up and linear decay.
_BERT_OPT = {"schedule": "polynomial", "min_lr": 0.0, "weight_decay": 0.01, "betas": (0.9, 0.98), "eps": 1e-6}
_UNIT_BERT_TRAIN = {
    # vq-wav2vec Sec. 5.3 (BERT base): warm-up over 10k updates to 1e-5, linear decay over 250k in total;
    # 128 GPUs with 3,072 tokens each (393k tokens per update)
    "full": {"lr": 1e-5, "warmup_steps": 10_000, "max_steps": 250_000, "max_batch_samples": 3_072,
             "crop_samples": 3_072, **_BERT_OPT},
    # one GPU: 20k updates of 16k tokens, sequences of up to 1,024 units
    "reduced": {"lr": 5e-4, "warmup_steps": 1_000, "max_steps": 20_000, "max_batch_samples": 16_384,
                "crop_samples": 1_024, **_BERT_OPT},
    # 2 CPU cores, about a minute: 300 updates of 4k tokens, sequences of up to 256 units
    "tiny": {"lr": 1e-3, "warmup_steps": 30, "max_steps": 300, "max_batch_samples": 4_096, "crop_samples": 256,
             **_BERT_OPT},
}
_BERT_PRESET = {"tiny": "tiny", "reduced": "reduced", "full": "base"}


# the registry ---------------------------------------------------------------------------------------

RECIPES: dict[str, _Spec] = {
    "wav2vec": _Spec(lambda s: Wav2VecConfig.preset(_PAPER_PRESET[s]), _WAV2VEC_TRAIN, _derive_warmup,
                     lambda r: Wav2Vec(r.model)),
    "vq_wav2vec": _Spec(lambda s: VQWav2VecConfig.preset(_PAPER_PRESET[s], quantizer="gumbel"), _VQ_WAV2VEC_TRAIN,
                        _derive_vq, lambda r: VQWav2Vec(r.model)),
    "vq_wav2vec_kmeans": _Spec(lambda s: VQWav2VecConfig.preset(_PAPER_PRESET[s], quantizer="kmeans"),
                               _VQ_WAV2VEC_TRAIN, _derive_vq, lambda r: VQWav2Vec(r.model)),
    "wav2vec2": _Spec(lambda s: Wav2Vec2Config.preset(_W2V2_PRESET[s]), _WAV2VEC2_TRAIN, _derive_wav2vec2,
                      lambda r: Wav2Vec2(r.model)),
    "hubert": _Spec(lambda s: HubertConfig.preset(_W2V2_PRESET[s]), _HUBERT_TRAIN, lambda m, t, b, o: m,
                    lambda r: Hubert(r.model)),
    "unit_bert": _Spec(lambda s: UnitBertConfig.preset(_BERT_PRESET[s], vocab_size=4), _UNIT_BERT_TRAIN,
                       _derive_warmup, lambda r: UnitBert(r.model), required=("vocab_size",)),
    **{f"wav2vec2_ctc_{m}": _Spec(_ctc_model(m), _ctc_train(m), _derive_ctc, _build_ctc) for m in CTC_MODES},
}
#: The models ``python -m speechssl.train`` pre-trains on audio.
PRETRAINING = ("wav2vec", "vq_wav2vec", "vq_wav2vec_kmeans", "wav2vec2")


def recipe(name: str, scale: str, **overrides: Any) -> Recipe:
    """The recipe of model ``name`` at ``scale``, with ``overrides`` applied before the derived schedules.

    Raises:
        ConfigError: an unknown model, scale or field, or an invalid value (naming it).
    """
    if name not in RECIPES:
        raise ConfigError(f"model: expected one of {sorted(RECIPES)}, found {name!r}")
    if scale not in SCALES:
        raise ConfigError(f"scale: expected one of {SCALES}, found {scale!r}")
    spec = RECIPES[name]
    model = spec.model(scale)
    model_fields = {f.name for f in dataclasses.fields(model)}
    train_fields = set(TrainConfig.field_names()) - {"model", "scale"}
    unknown = sorted(set(overrides) - model_fields - train_fields)
    if unknown:
        raise ConfigError(f"recipe({name!r}, {scale!r}): unknown setting(s) {unknown}; a setting is a field of "
                          f"{type(model).__name__} ({', '.join(sorted(model_fields))}) or of TrainConfig "
                          f"({', '.join(sorted(train_fields))})")
    both = sorted(set(overrides) & model_fields & train_fields)
    if both:
        raise ConfigError(f"recipe({name!r}, {scale!r}): {both} name fields of both the model and the run")
    train = {**_RUN[scale], **spec.train[scale], **{k: v for k, v in overrides.items() if k in train_fields}}
    base_steps = spec.train[scale]["max_steps"]
    missing = [k for k in spec.required if k not in overrides]
    if missing:
        raise ConfigError(f"recipe({name!r}, {scale!r}): expected a value for {missing} (it comes from the data)")
    model = dataclasses.replace(model, **{k: v for k, v in overrides.items() if k in model_fields})
    model = spec.derive(model, train, base_steps, set(overrides))
    return Recipe(name, scale, model, TrainConfig.from_dict({"model": name, "scale": scale, **train},
                                                            source=f"recipe({name!r}, {scale!r})"), CORPUS[scale])
