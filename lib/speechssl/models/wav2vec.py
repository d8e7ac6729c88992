"""wav2vec: unsupervised pre-training for speech recognition (Schneider, Baevski, Collobert & Auli 2019).

The model, top-down (paper Sec. 2):

1. **Encoder** ``f: X -> Z`` (Sec. 2.1). Five causal convolutions over the raw 16 kHz waveform,
   kernels (10, 8, 4, 4, 4) and strides (5, 4, 2, 2, 2), 512 channels, each followed by a group
   norm with a single group and a ReLU. One latent frame ``z_i`` every 160 samples (10 ms), each
   seeing 465 samples (about 30 ms).
2. **Context network** ``g: Z -> C`` (Sec. 2.1). Nine causal convolutions of kernel 3 and stride 1
   with the same block; ``c_i = g(z_i, ..., z_{i-v})`` sees ``v + 1 = 19`` frames, about 210 ms.
3. **Step-specific predictors** (Sec. 2.2). ``h_k(c_i) = W_k c_i + b_k`` for ``k = 1..K``, K = 12.
4. **Objective** (Sec. 2.2, Eq. 1). For each ``k``, score ``z_{i+k}`` against ``lambda = 10``
   distractors drawn uniformly from the same utterance with a logistic loss, and sum over
   ``k``: see :func:`speechssl.nn.losses.future_prediction_loss`.

After pre-training, ``c`` (or ``z``) replaces log-mel features as the input of an acoustic model.

Details not in the paper, taken from fairseq (``fairseq/models/wav2vec/wav2vec.py`` and the
README command that trained the released model): the encoder convolutions have no bias, the
context convolutions do; the encoder output is log-compressed, ``log(1 + |z|)``; the causal
padding of the context network replicates the first frame. Where the paper and fairseq differ
we follow the paper and say so: fairseq predicts steps ``offset .. offset + K - 1`` with
``offset = ceil(receptive field / hop) = 3`` and shares one bias between the K predictors; here
``prediction_offset = 1`` (``k = 1..K`` as Eq. 1) and each ``h_k`` has its own ``b_k``.

Usage::

    model = Wav2Vec(Wav2VecConfig.preset("tiny"))
    loss, metrics = model.compute_loss(batch, num_updates)   # batch from collate_audio
    out = model(batch["audio"], batch["lengths"])             # out.z (B, T, 512), out.c (B, T, 512)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError, config_error
from ..frames import WAV2VEC_ENCODER
from ..nn.conv import ACTIVATIONS, ConvContextNetwork, ConvFeatureEncoder
from ..nn.losses import ContrastiveOutput, chance_loss, future_prediction_loss, sample_negatives
from .inputs import audio_from_batch, check_min_samples

__all__ = [
    "FuturePrediction",
    "StepPredictors",
    "Wav2Vec",
    "Wav2VecConfig",
    "Wav2VecOutput",
    "evaluate_prediction",
]

#: Context network of the paper (Sec. 2.1): nine layers (channels, kernel).
PAPER_CONTEXT = ((512, 3),) * 9
#: wav2vec large (Sec. 2.1): "two additional linear transformations in the encoder" (1x1 convolutions,
#: fairseq README command) and twelve context layers of kernels 2, 3, ..., 13 with skip connections.
LARGE_ENCODER = WAV2VEC_ENCODER + ((512, 1, 1),) * 2
LARGE_CONTEXT = tuple((512, k) for k in range(2, 14))


@dataclass
class Wav2VecConfig:
    """Configuration of :class:`Wav2Vec`; the defaults are the paper's model (``preset("paper")``)."""

    encoder_layers: tuple[tuple[int, int, int], ...] = WAV2VEC_ENCODER  # Sec. 2.1 (fairseq conv_feature_layers)
    context_layers: tuple[tuple[int, int], ...] = PAPER_CONTEXT       # Sec. 2.1 (conv_aggregator_layers)
    norm: str = "group"            # Sec. 2.1: group norm with a single group ("group", "layer" or "none")
    activation: str = "relu"       # Sec. 2.1: ReLU (fairseq --activation relu)
    encoder_bias: bool = False     # fairseq ConvFeatureExtractionModel: Conv1d(..., bias=False)
    context_bias: bool = True      # fairseq ConvAggegator: conv_bias = not --no-conv-bias
    log_compression: bool = True   # fairseq --log-compression (README command); not in the paper text
    context_skip: bool = False     # Sec. 2.1: skip connections only in wav2vec large
    residual_scale: float = 0.5    # fairseq --residual-scale 0.5 (used with skip connections)
    dropout: float = 0.0           # fairseq --dropout default 0.0
    prediction_steps: int = 12     # Sec. 3.3: K = 12 tasks
    num_negatives: int = 10        # Sec. 2.2/3.3: ten distractors, lambda = 10
    prediction_offset: int = 1     # Eq. (1): k = 1..K (fairseq --offset auto would give 3)
    loss: str = "binary"           # Eq. (1); "infonce": fairseq --infonce (CPC's cross-entropy)
    predictor_lr_scale: float = 1.0  # 1 = the paper; >1 lets h_k learn faster under Adam (StepPredictors)

    def __post_init__(self) -> None:
        self.encoder_layers = tuple(tuple(int(v) for v in layer) for layer in self.encoder_layers)
        self.context_layers = tuple(tuple(int(v) for v in layer) for layer in self.context_layers)
        self.validate()

    def validate(self) -> None:
        owner = type(self).__name__
        for name in ("prediction_steps", "num_negatives", "prediction_offset"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise config_error(owner, name, "an integer >= 1", v)
        if self.norm not in ("group", "layer", "none"):
            raise config_error(owner, "norm", "'group', 'layer' or 'none'", self.norm)
        if self.loss not in ("binary", "infonce"):
            raise config_error(owner, "loss", "'binary' (Eq. 1) or 'infonce'", self.loss)
        if not self.predictor_lr_scale > 0:
            raise config_error(owner, "predictor_lr_scale", "a positive number", self.predictor_lr_scale)
        if self.activation not in ACTIVATIONS:
            raise config_error(owner, "activation", f"one of {ACTIVATIONS}", self.activation)
        if not 0.0 <= self.dropout < 1.0:
            raise config_error(owner, "dropout", "a probability in [0, 1)", self.dropout)
        if self.residual_scale <= 0:
            raise config_error(owner, "residual_scale", "a positive number", self.residual_scale)
        for field_name, layers, width, names in (("encoder_layers", self.encoder_layers, 3, "(channels, kernel, stride)"),
                                                 ("context_layers", self.context_layers, 2, "(channels, kernel)")):
            if len(layers) == 0:
                raise config_error(owner, field_name, f"at least one layer {names}", layers)
            for i, layer in enumerate(layers):
                if len(layer) != width or min(layer) < 1:
                    raise config_error(owner, f"{field_name}[{i}]", f"{names} of positive integers", layer)

    @property
    def encoder_dim(self) -> int:
        return self.encoder_layers[-1][0]

    @property
    def context_dim(self) -> int:
        return self.context_layers[-1][0]

    @classmethod
    def preset(cls, name: str, **overrides) -> "Wav2VecConfig":
        """A named configuration, optionally with fields replaced.

        - ``"paper"``: the wav2vec model of Sec. 2.1 (15,496,704 parameters).
        - ``"large"``: wav2vec large, Sec. 2.1 (32,542,720; fairseq's released checkpoint has
          32.5M, one shared predictor bias instead of K).
        - ``"reduced"``: the paper's layers at 256 channels, for one GPU (3,881,728).
        - ``"tiny"``: the paper's layers (5 encoder layers with its kernels and strides, so
          100 Hz frames and a 465-sample receptive field; 9 context layers of kernel 3; K = 12;
          10 negatives) at 96 channels (549,408), with two changes that let it learn in a few
          hundred CPU updates: skip connections in the context network (as wav2vec large) and
          ``predictor_lr_scale=30`` (see :class:`StepPredictors`). Without them the binary
          loss settles at the prior, 3.35, within 50 updates in every setting we tried.
        """
        if name not in WAV2VEC_PRESETS:
            raise ConfigError(f"Wav2VecConfig.preset: expected one of {sorted(WAV2VEC_PRESETS)}, found {name!r}")
        return dataclasses.replace(WAV2VEC_PRESETS[name], **overrides)


WAV2VEC_PRESETS: dict[str, Wav2VecConfig] = {
    "paper": Wav2VecConfig(),
    "large": Wav2VecConfig(encoder_layers=LARGE_ENCODER, context_layers=LARGE_CONTEXT, context_skip=True),
    "reduced": Wav2VecConfig(encoder_layers=tuple((256, k, s) for _, k, s in WAV2VEC_ENCODER),
                             context_layers=((256, 3),) * 9),
    "tiny": Wav2VecConfig(encoder_layers=tuple((96, k, s) for _, k, s in WAV2VEC_ENCODER),
                          context_layers=((96, 3),) * 9, context_skip=True, predictor_lr_scale=30.0),
}


# ----------------------------------------------------------------------------------------------
# The objective


class StepPredictors(nn.Module):
    """``h_k(c) = W_k c + b_k`` for ``k = 1..K`` (Sec. 2.2), stored as one ``Linear(C, K * D)``.

    Row block ``k`` of the weight is ``W_k`` and its bias block ``b_k``, so the K maps are
    independent. ``(B, T, C)`` -> ``(B, T, K, D)``.

    Initialisation: fairseq builds the K maps as one ``ConvTranspose2d(C, D, (1, K))``, whose
    default init draws weights and bias from ``U(-1/sqrt(D K), 1/sqrt(D K))``; we do the same.

    ``lr_scale`` stores the parameters divided by ``lr_scale`` and multiplies them back in the
    forward pass: the function is unchanged, but under Adam (whose steps have a fixed size per
    parameter) the maps move ``lr_scale`` times faster than the rest of the model. 1 is the
    plain parametrization of the paper. Small models trained for a few hundred updates need it
    (the tiny presets use 30): with the binary loss of Eq. (1) the quickest way to lower the
    initial loss is to make every score equal to the log prior odds of a positive (3.35 for
    10 negatives), and the encoder and context network get there within tens of updates by
    shrinking their features to a constant, a fixed point from which they do not recover;
    step predictors that learn faster reach the prior themselves and keep the features alive.
    """

    def __init__(self, in_dim: int, out_dim: int, steps: int, lr_scale: float = 1.0) -> None:
        super().__init__()
        if lr_scale <= 0:
            raise config_error("StepPredictors", "lr_scale", "a positive number", lr_scale)
        self.steps, self.out_dim, self.lr_scale = steps, out_dim, float(lr_scale)
        self.proj = nn.Linear(in_dim, steps * out_dim)
        bound = 1.0 / (out_dim * steps) ** 0.5
        nn.init.uniform_(self.proj.weight, -bound / self.lr_scale, bound / self.lr_scale)
        nn.init.uniform_(self.proj.bias, -bound / self.lr_scale, bound / self.lr_scale)

    @property
    def weight(self) -> torch.Tensor:
        """``(K * D, C)``: the stacked ``W_k``."""
        return self.proj.weight * self.lr_scale

    @property
    def bias(self) -> torch.Tensor:
        """``(K * D,)``: the stacked ``b_k``."""
        return self.proj.bias * self.lr_scale

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        bsz, tsz, _ = c.shape
        h = self.proj(c) * self.lr_scale if self.lr_scale != 1.0 else self.proj(c)
        return h.view(bsz, tsz, self.steps, self.out_dim)  # (B, T, K, D)


class FuturePrediction(nn.Module):
    """The wav2vec objective: K step predictors, same-utterance distractors and Eq. (1).

    ``forward(c (B, T, C), targets (B, T, D), lengths (B,))`` -> :class:`ContrastiveOutput`.
    ``negative_indices`` ``(B, T, N)`` may be given to fix the distractors (tests).
    ``loss="infonce"`` replaces Eq. (1) by a cross-entropy over the positive and its
    distractors (CPC's InfoNCE; fairseq ``--infonce``).
    """

    def __init__(self, context_dim: int, target_dim: int, steps: int, num_negatives: int, offset: int = 1, *,
                 loss: str = "binary", lr_scale: float = 1.0) -> None:
        super().__init__()
        self.predictors = StepPredictors(context_dim, target_dim, steps, lr_scale)
        self.steps, self.num_negatives, self.offset, self.loss = steps, num_negatives, offset, loss

    def forward(self, c: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                negative_indices: torch.Tensor | None = None) -> ContrastiveOutput:
        preds = self.predictors(c)                                           # (B, T, K, D)
        if negative_indices is None:
            with torch.no_grad():
                negative_indices = sample_negatives(lengths, targets.shape[1], self.num_negatives)  # (B, T, N)
        return future_prediction_loss(preds, targets, lengths, negative_indices, offset=self.offset, loss=self.loss)


def contrastive_metrics(out: ContrastiveOutput) -> dict[str, torch.Tensor | float]:
    """``acc`` and ``acc_step{k}`` (k from 1) from a :class:`ContrastiveOutput`."""
    metrics: dict[str, torch.Tensor | float] = {"acc": out.accuracy.detach()}
    for k, a in enumerate(out.step_accuracy.detach()):
        metrics[f"acc_step{k + 1}"] = a
    metrics["num_positives"] = float(out.num_positives)
    return metrics


# ----------------------------------------------------------------------------------------------
# The model


@dataclass
class Wav2VecOutput:
    """``z`` ``(B, T, D)`` latent frames, ``c`` ``(B, T, C)`` context vectors, ``lengths`` ``(B,)`` frames."""

    z: torch.Tensor
    c: torch.Tensor
    lengths: torch.Tensor
    extra: dict = field(default_factory=dict)


class Wav2Vec(nn.Module):
    """wav2vec: encoder ``f``, causal context network ``g`` and the future-prediction objective."""

    def __init__(self, cfg: Wav2VecConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else Wav2VecConfig()
        cfg.validate()
        self.encoder = ConvFeatureEncoder(cfg.encoder_layers, norm=cfg.norm, activation=cfg.activation,
                                          bias=cfg.encoder_bias, dropout=cfg.dropout,
                                          log_compression=cfg.log_compression)
        self.context = ConvContextNetwork(cfg.encoder_dim, cfg.context_layers, norm=cfg.norm,
                                          activation=cfg.activation, bias=cfg.context_bias, dropout=cfg.dropout,
                                          skip_connections=cfg.context_skip, residual_scale=cfg.residual_scale)
        self.objective = FuturePrediction(cfg.context_dim, cfg.encoder_dim, cfg.prediction_steps,
                                          cfg.num_negatives, cfg.prediction_offset, loss=cfg.loss,
                                          lr_scale=cfg.predictor_lr_scale)

    # -- facts a reader (and the training loop) may want -----------------------------------------
    @property
    def receptive_field(self) -> int:
        """Samples seen by one latent frame ``z_i`` (paper encoder: 465)."""
        return self.encoder.receptive_field

    @property
    def hop(self) -> int:
        """Samples between frames (paper: 160, 10 ms)."""
        return self.encoder.hop

    @property
    def chance_loss(self) -> float:
        """Loss of the best input-independent predictor: 3.35 for 10 negatives (binary), ln 11 (InfoNCE)."""
        return chance_loss(self.cfg.loss, self.cfg.num_negatives)

    @property
    def chance_accuracy(self) -> float:
        """``1 / (N + 1)``: accuracy of a random ranking of the positive among N distractors."""
        return 1.0 / (self.cfg.num_negatives + 1)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames of ``z`` / ``c`` for utterances of ``lengths`` samples."""
        return self.encoder.output_lengths(lengths)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> Wav2VecOutput:
        """``audio`` ``(B, T)`` and ``lengths`` ``(B,)`` samples -> latent and context frames."""
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], dtype=torch.int64, device=audio.device)
        z, frames = self.encoder(audio, lengths)  # (B, D, T')
        c, _ = self.context(z, frames)            # (B, C, T')
        return Wav2VecOutput(z=z.transpose(1, 2), c=c.transpose(1, 2), lengths=frames)

    def compute_loss(self, batch: Mapping, num_updates: int = 0) -> tuple[torch.Tensor, dict]:
        """Eq. (1) summed over the K steps, averaged over positives (see :mod:`speechssl.nn.losses`).

        Returns ``(loss, metrics)`` with ``acc`` (positive ranked above all distractors),
        ``acc_step1..K`` and ``num_positives``.
        """
        audio, lengths = self.checked_batch(batch)
        out = self(audio, lengths)
        res = self.objective(out.c, out.z, out.lengths)
        return res.loss, contrastive_metrics(res)

    @property
    def min_input_samples(self) -> int:
        """Shortest usable utterance: ``max(offset + K, N + 1)`` frames, so that the farthest step has a
        target and every target ``N`` distractors from its utterance (2,385 samples for the paper)."""
        cfg = self.cfg
        frames = max(cfg.prediction_offset + cfg.prediction_steps, cfg.num_negatives + 1)
        return self.receptive_field + (frames - 1) * self.hop

    def checked_batch(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """``(audio, lengths)`` of a batch whose utterances are all long enough (:attr:`min_input_samples`)."""
        owner = type(self.cfg).__name__
        audio, lengths = audio_from_batch(batch, owner)
        check_min_samples(lengths, self.min_input_samples, owner,
                          f"{self.cfg.prediction_offset + self.cfg.prediction_steps - 1} frames ahead for "
                          f"K={self.cfg.prediction_steps} steps and {self.cfg.num_negatives} distractors")
        return audio, lengths

    @torch.no_grad()
    def extract_features(self, audio: torch.Tensor, lengths: torch.Tensor | None = None,
                         layer: str = "context") -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features for downstream use: ``("context" | "encoder")`` -> ``((B, T', C), (B,))``."""
        out = self(audio, lengths)
        if layer not in ("context", "encoder"):
            raise ConfigError(f"extract_features.layer: expected 'context' or 'encoder', found {layer!r}")
        return (out.c if layer == "context" else out.z), out.lengths


@torch.no_grad()
def evaluate_prediction(model: Wav2Vec, batches, *, seed: int = 0) -> dict[str, object]:
    """The future-prediction objective of a trained model on held-out batches, in eval mode.

    ``batches``: an iterable of :func:`~speechssl.data.dataset.collate_audio` batches (moved to the
    model's device). The
    distractors are drawn from a generator seeded with ``seed``, so the numbers are reproducible
    (the global random state is left untouched). vq-wav2vec is evaluated on its deterministic
    codes (no Gumbel noise). Returns ``loss`` (mean over positives, as in training),
    ``accuracy``, ``step_accuracy`` ``(K,)`` (positive ranked above all its distractors, per
    step ``k``), ``step_loss`` ``(K,)``, ``positives`` and ``chance_loss`` / ``chance_accuracy``.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    obj = model.objective
    k = obj.steps
    loss_sum, acc_sum, count = 0.0, 0.0, 0
    step_loss, step_acc, step_count = torch.zeros(k), torch.zeros(k), torch.zeros(k)
    device = next(model.parameters()).device
    try:
        for batch in batches:
            audio, lengths = model.checked_batch(batch)
            out = model(audio.to(device), lengths.to(device))
            neg = sample_negatives(out.lengths.cpu(), out.z.shape[1], obj.num_negatives, generator=gen)
            res = obj(out.c, out.z, out.lengths, negative_indices=neg.to(out.z.device))
            n = res.num_positives
            loss_sum += float(res.loss) * n
            acc_sum += float(res.accuracy) * n
            count += n
            cnt = res.step_count.float().cpu()
            step_loss += res.step_loss.float().cpu() * cnt
            step_acc += res.step_accuracy.float().cpu() * cnt
            step_count += cnt
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate_prediction: the batches hold no prediction targets")
    return {
        "loss": loss_sum / count, "accuracy": acc_sum / count,
        "step_accuracy": (step_acc / step_count.clamp_min(1)).numpy(),
        "step_loss": (step_loss / step_count.clamp_min(1)).numpy(),
        "positives": count, "chance_loss": model.chance_loss, "chance_accuracy": model.chance_accuracy,
    }
