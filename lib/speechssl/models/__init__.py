"""The models of the book and how to train them at each scale.

Every model is an ``nn.Module`` with ``compute_loss(batch, num_updates) -> (loss, metrics)``,
where ``batch`` comes from :func:`speechssl.data.dataset.collate_audio` and ``num_updates`` is
the number of optimizer steps taken so far (it drives annealing such as vq-wav2vec's
Gumbel temperature).

:data:`MODEL_SPECS` maps a model name to a :class:`ModelSpec`: ``build(scale)`` returns the
model for a scale (``"tiny"``, ``"reduced"`` or ``"full"``) and ``train_overrides(scale)``
the training settings (fields of the training engine's config) for that scale. At ``full``
scale both follow the papers; each value below names its source.

- ``wav2vec``: Schneider et al. 2019, Sec. 3.3 (pre-training on full Librispeech).
- ``vq_wav2vec`` (Gumbel) and ``vq_wav2vec_kmeans``: Baevski et al. 2020, Sec. 5.2.
- ``wav2vec2``: Baevski et al. 2020 (wav2vec 2.0), Sec. 4.2, BASE on LibriSpeech 960 h.

CTC fine-tuning of a pre-trained ``wav2vec2`` (Sec. 4.3) has its own settings per scale,
:func:`ctc_config` and :func:`ctc_train_overrides`, used by ``python -m speechssl.finetune``.

``max_batch_samples`` is per GPU (fairseq ``--max-tokens``); the papers train on 8 GPUs.
``grad_clip = 0.0`` means no clipping (neither paper clips; fairseq ``--clip-norm`` default 0).
Both papers warm the learning rate up linearly from 1e-7 (fairseq ``--warmup-init-lr``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import ConfigError
from .ctc import CTCConfig
from .unit_bert import UnitBert, UnitBertConfig, UnitVocabulary
from .vq_wav2vec import VQWav2Vec, VQWav2VecConfig
from .wav2vec import Wav2Vec, Wav2VecConfig
from .wav2vec2 import Wav2Vec2, Wav2Vec2Config

__all__ = [
    "ANNEAL_FRACTION", "CTC_MODES", "MODEL_SPECS", "ModelSpec", "SCALES", "UnitBert", "UnitBertConfig", "UnitVocabulary", "VQWav2Vec",
    "VQWav2VecConfig", "Wav2Vec", "Wav2Vec2", "Wav2Vec2Config", "Wav2VecConfig", "build_model",
]

SCALES = ("tiny", "reduced", "full")
#: Model preset used at each scale.
_PRESET = {"tiny": "tiny", "reduced": "reduced", "full": "paper"}


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and train it at a scale."""

    name: str
    build: Callable[[str], nn.Module]
    train_overrides: Callable[[str], dict]


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ConfigError(f"scale: expected one of {SCALES}, found {scale!r}")


# Training settings --------------------------------------------------------------------------------

_ADAM = {"weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8}  # fairseq Adam defaults, no weight decay

_WAV2VEC_TRAIN = {
    "full": {
        "lr": 5e-3,                    # wav2vec Sec. 3.3: warm-up to 5e-3 ...
        "schedule": "cosine",          # ... then cosine decay (Loshchilov & Hutter 2016) ...
        "warmup_steps": 500,           # ... over the first 500 updates ...
        "min_lr": 1e-6,                # ... down to 1e-6
        "max_steps": 400_000,          # 400k updates on full Librispeech
        "max_batch_samples": 1_500_000,  # 1.5M samples per GPU, 8 GPUs
        "crop_samples": 150_000,       # sequences cropped to 150k samples (9.4 s)
        "grad_clip": 0.0,
        **_ADAM,
    },
    "reduced": {  # one GPU, tens of minutes: 20k updates of 40 s of audio (about 220 h seen)
        "lr": 1e-3, "schedule": "cosine", "warmup_steps": 500, "min_lr": 1e-6, "max_steps": 20_000,
        "max_batch_samples": 640_000, "crop_samples": 80_000, "grad_clip": 0.0, **_ADAM,
    },
    "tiny": {  # 2 CPU cores: 400 updates of 8 crops of 2 s (1.8 h of audio, ~4.5 passes over 24 min),
               # about 1.5-2 minutes; lr 3e-4 with predictor_lr_scale=30 in the tiny presets
        "lr": 3e-4, "schedule": "cosine", "warmup_steps": 30, "min_lr": 1e-5, "max_steps": 400,
        "max_batch_samples": 256_000, "crop_samples": 32_000, "grad_clip": 0.0, **_ADAM,
    },
}

_VQ_WAV2VEC_TRAIN = {
    "full": {
        "lr": 5e-3,                    # vq-wav2vec Sec. 5.2: warm-up from 1e-7 to 5e-3 ...
        "schedule": "cosine",          # ... then annealed with a cosine schedule ...
        "warmup_steps": 500,           # ... over 500 warm-up steps ...
        "min_lr": 1e-6,                # ... to 1e-6
        "max_steps": 400_000,          # 400k updates
        "max_batch_samples": 1_500_000,  # batch size 10 of 150k-sample crops per GPU, 8 GPUs
        "crop_samples": 150_000,       # random 150,000-frame crops (about 9.3 s)
        "grad_clip": 0.0,
        **_ADAM,
    },
    "reduced": dict(_WAV2VEC_TRAIN["reduced"]),
    "tiny": dict(_WAV2VEC_TRAIN["tiny"]),
}

#: Share of the updates over which the Gumbel temperature falls from 2 to 0.5 (vq-wav2vec Sec. 5.2).
ANNEAL_FRACTION = 0.7


_WAV2VEC2_TRAIN = {
    "full": {  # Sec. 4.2 BASE; fairseq wav2vec2_base_librispeech.yaml
        "lr": 5e-4,                    # peak learning rate 5e-4 ...
        "schedule": "polynomial",      # ... warmed up over the first 8% of updates, then decayed linearly
        "warmup_fraction": 0.08,
        "min_lr": 0.0,
        "max_steps": 400_000,          # 400k updates
        "max_batch_samples": 1_400_000,  # 1.4M samples per GPU (87.5 s), 64 GPUs: 1.6 h per batch
        "crop_samples": 250_000,       # crops of at most 250k samples (15.6 s)
        "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.01,
        "grad_clip": 0.0,              # fairseq clip_norm 0 for pre-training
        "precision": "bf16",           # fairseq trains in fp16; bf16 needs no loss scale
    },
    "reduced": {  # one GPU: 40k updates of 200 s of audio
        "lr": 5e-4, "schedule": "polynomial", "warmup_fraction": 0.08, "min_lr": 0.0, "max_steps": 40_000,
        "max_batch_samples": 3_200_000, "crop_samples": 160_000, "betas": (0.9, 0.98), "eps": 1e-6,
        "weight_decay": 0.01, "grad_clip": 0.0, "precision": "bf16",
    },
    "tiny": {  # 2 CPU cores, about 2.5 minutes: 600 updates of 4 crops of 3 s (149 frames, enough for
               # 100 distractors); a higher peak rate than the paper's for so few updates
        "lr": 2e-3, "schedule": "polynomial", "warmup_fraction": 0.08, "min_lr": 0.0, "max_steps": 600,
        "max_batch_samples": 192_000, "crop_samples": 48_000, "betas": (0.9, 0.98), "eps": 1e-6,
        "weight_decay": 0.01, "grad_clip": 0.0,
    },
}


def wav2vec2_train_overrides(scale: str) -> dict:
    _check_scale(scale)
    return dict(_WAV2VEC2_TRAIN[scale])


def build_wav2vec2(scale: str) -> Wav2Vec2:
    _check_scale(scale)
    return Wav2Vec2(Wav2Vec2Config.preset({"tiny": "tiny", "reduced": "reduced", "full": "base"}[scale]))


# CTC fine-tuning ----------------------------------------------------------------------------------

#: The three ways of training a CTC model on the labels (the rows of the fine-tuning chapter's table):
#: fine-tune a pre-trained encoder, train the same architecture from scratch, or train only a
#: linear CTC layer on frozen pre-trained features.
CTC_MODES = ("finetune", "scratch", "probe")

_CTC_TRAIN = {
    "full": {  # fairseq examples/wav2vec/config/finetuning/base_10m.yaml (10 minutes of labels)
        "lr": 5e-5,                    # lr: [0.00005]
        "schedule": "tri_stage",       # lr_scheduler: tri_stage ...
        "tri_stage_ratios": (0.1, 0.4, 0.5),  # ... phase_ratio [0.1, 0.4, 0.5] ...
        "init_lr_scale": 0.01, "final_lr_scale": 0.05,  # ... from 0.01 lr, down to 0.05 lr
        "max_steps": 13_000,           # max_update: 13000
        "max_batch_samples": 3_200_000,  # max_tokens: 3200000 per GPU ...
        "accum_steps": 4,              # ... update_freq [4] on 2 GPUs (distributed_world_size: 2)
        "crop_samples": None,          # whole utterances: CTC needs the whole transcript
        "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 0.0,
        "precision": "bf16",
    },
    "reduced": {  # one GPU, tens of minutes: 4k updates of 100 s of audio on the same 10-minute split
        "lr": 1e-4, "schedule": "tri_stage", "tri_stage_ratios": (0.1, 0.4, 0.5), "init_lr_scale": 0.01,
        "final_lr_scale": 0.05, "max_steps": 4_000, "max_batch_samples": 1_600_000, "crop_samples": None,
        "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 0.0, "precision": "bf16",
    },
    "tiny": {  # 2 CPU cores: 600 updates of 10 s of audio (about 10 passes over the 10 minutes);
               # lr 1e-3: 5e-4 fine-tuned more slowly (dev PER 0.79 against 0.74 with heavier masks), and
               # 2e-3 left both fine-tuning and training from scratch on the all-blank plateau.
               # The Transformer is unfrozen at the peak rate (the paper unfreezes it late in the decay,
               # near 1e-5), and without clipping fine-tuning stayed on the all-blank plateau for one of
               # two pre-trained checkpoints (dev PER 0.96); with the gradient norm clipped at 1 the dev
               # PER was 0.53, 0.58 and 0.54 on three checkpoints, and clipping lowered it for the other
               # rows too (from scratch 0.50 -> 0.40, probe 0.67 -> 0.64).
        "lr": 1e-3, "schedule": "tri_stage", "tri_stage_ratios": (0.1, 0.4, 0.5), "init_lr_scale": 0.01,
        "final_lr_scale": 0.05, "max_steps": 600, "max_batch_samples": 160_000, "crop_samples": None,
        "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 1.0,
    },
}

#: Learning-rate factor of the linear probe, which trains one linear layer (this book's choice, not
#: the paper's). Tiny dev PER: 0.67 at 10x against 0.84 at 3x; 30x was no better than 10x.
PROBE_LR_FACTOR = 10.0

_CTC_MODEL = {
    "full": CTCConfig(),               # the defaults are base_10m.yaml's
    # reduced and tiny: channel spans scaled with the width (64 of 768 channels in BASE)
    "reduced": CTCConfig(freeze_updates=3_000, mask_channel_length=32),
    # tiny: 600 updates underfit, so masking is lighter (dev PER of the fine-tuned model:
    # 0.55 without masks, 0.60 with 10%/10%, 0.70 with 30% of time steps and 25% of channels,
    # measured without gradient clipping)
    "tiny": CTCConfig(freeze_updates=100, mask_prob=0.1, mask_length=3, mask_channel_prob=0.1,
                      mask_channel_length=16),
}


def _check_mode(mode: str) -> None:
    if mode not in CTC_MODES:
        raise ConfigError(f"CTC mode: expected one of {CTC_MODES}, found {mode!r}")


def ctc_config(scale: str, mode: str = "finetune") -> CTCConfig:
    """The :class:`~speechssl.models.ctc.CTCConfig` of a scale and mode (see :data:`CTC_MODES`).

    ``scratch`` trains everything from the first update (``freeze_updates=0`` and the feature
    encoder trained); ``probe`` keeps the whole encoder frozen.
    """
    _check_scale(scale)
    _check_mode(mode)
    base = _CTC_MODEL[scale]
    if mode == "scratch":
        return dataclasses.replace(base, freeze_updates=0, train_feature_encoder=True)
    if mode == "probe":
        return dataclasses.replace(base, freeze_updates=0, linear_probe=True)
    return dataclasses.replace(base)


def ctc_train_overrides(scale: str, mode: str = "finetune") -> dict:
    """Training settings of CTC fine-tuning at a scale; the probe's rate is ``PROBE_LR_FACTOR`` higher."""
    _check_scale(scale)
    _check_mode(mode)
    out = dict(_CTC_TRAIN[scale])
    if mode == "probe":
        out["lr"] = out["lr"] * PROBE_LR_FACTOR
    return out


def wav2vec_train_overrides(scale: str) -> dict:
    _check_scale(scale)
    return dict(_WAV2VEC_TRAIN[scale])


def vq_wav2vec_train_overrides(scale: str) -> dict:
    _check_scale(scale)
    return dict(_VQ_WAV2VEC_TRAIN[scale])


# Builders -------------------------------------------------------------------------------------------


def build_wav2vec(scale: str) -> Wav2Vec:
    _check_scale(scale)
    return Wav2Vec(Wav2VecConfig.preset(_PRESET[scale]))


def _vq_config(scale: str, quantizer: str) -> VQWav2VecConfig:
    _check_scale(scale)
    max_steps = _VQ_WAV2VEC_TRAIN[scale]["max_steps"]
    # the temperature schedule follows the scale's number of updates (400k -> 280k at full scale)
    return VQWav2VecConfig.preset(_PRESET[scale], quantizer=quantizer,
                                  anneal_updates=round(ANNEAL_FRACTION * max_steps))


def build_vq_wav2vec(scale: str) -> VQWav2Vec:
    return VQWav2Vec(_vq_config(scale, "gumbel"))


def build_vq_wav2vec_kmeans(scale: str) -> VQWav2Vec:
    return VQWav2Vec(_vq_config(scale, "kmeans"))


MODEL_SPECS: dict[str, ModelSpec] = {
    "wav2vec": ModelSpec("wav2vec", build_wav2vec, wav2vec_train_overrides),
    "vq_wav2vec": ModelSpec("vq_wav2vec", build_vq_wav2vec, vq_wav2vec_train_overrides),
    "vq_wav2vec_kmeans": ModelSpec("vq_wav2vec_kmeans", build_vq_wav2vec_kmeans, vq_wav2vec_train_overrides),
    "wav2vec2": ModelSpec("wav2vec2", build_wav2vec2, wav2vec2_train_overrides),
}


def build_model(name: str, scale: str) -> nn.Module:
    """``MODEL_SPECS[name].build(scale)`` with a clear error for an unknown name."""
    if name not in MODEL_SPECS:
        raise ConfigError(f"model: expected one of {sorted(MODEL_SPECS)}, found {name!r}")
    return MODEL_SPECS[name].build(scale)
