"""wav2vec-U: unsupervised speech recognition (Baevski, Hsu, Conneau & Auli 2021).

The model, top-down (paper Sec. 3, fairseq ``examples/wav2vec/unsupervised/models/wav2vec_u.py`` and
``config/gan/w2vu.yaml``):

1. **Generator** ``G`` (Sec. 3.1): one convolution from segment representations ``S`` to phone logits,
   kernel 4, stride 1, padding 2, no bias (fairseq ``generator_kernel 4``, ``generator_bias false``),
   after a dropout of 0.1 on its input (``generator_dropout``). Padding 2 on both sides of a kernel of 4
   gives ``T + 1`` outputs for ``T`` segments; the extra one is valid, the padding mask moves one step
   to the right (fairseq ``Generator.forward``).
2. **JOIN** (fairseq ``JoinSegmenter``, ``segmentation.type JOIN``): consecutive outputs with the same
   argmax are one phone. In training one output per run, drawn uniformly, stands for the run
   (``mean_pool_join false``: "random sampling works better during training", fairseq issue 3617); in
   evaluation the logits of a run are averaged. Both are a matrix product of a (run x output) selection
   matrix with the logits here, so the backward pass is a matrix product too (no scatter-add).
3. **Discriminator** ``C`` (Sec. 3.1): causal convolutions over phone distributions (``w2vu.yaml``:
   dimension 384, depth 2, kernel 6, no dropout): ``conv(V -> d) -> [conv(d -> d) -> GELU] x (depth - 1)
   -> conv(d -> 1)``, no non-linearity after the first (``discriminator_act_after_linear false``); its
   score is the mean over the valid steps. Its input is the generator's softmax (fake) or the one-hot
   phones of unpaired text (real). With fairseq's ``gumbel`` option (off in ``w2vu.yaml``) the fake input is
   a Gumbel-softmax sample in training, at a temperature that falls from 2 by a factor 0.99995 per update to
   0.1 (``temp``), and with ``hard_gumbel`` its one-hot, which looks like text to the discriminator while the
   generator learns through the soft sample.
4. **Objective** (Sec. 3.2, Eq. 1): ``min_G max_C E[log C(Y)] - E[log(1 - C(G(S)))] - lambda L_gp +
   gamma L_sp + eta L_pd``, in fairseq's binary cross-entropies (summed over the batch) with target 1 for
   generated and 0 for real sequences on the discriminator's steps and target 0 for generated on the
   generator's steps, so the generator is trained to make ``C`` call its output real.
   - ``L_gp`` (Eq. 2, Gulrajani et al. 2017), discriminator steps only: the gradient of ``C`` at a random
     interpolation of a real and a fake batch (cut to the shorter batch and length), ``lambda = 1.5``.
     The paper takes the norm per sample; fairseq takes ``gradients.norm(2, dim=1)`` on a (batch, time,
     phone) tensor, the norm **over time for each sample and phone**, and sums ``(norm - 1)^2`` over
     both. This book follows fairseq, the code behind the paper's numbers.
   - ``L_sp`` (Eq. 3), generator steps only: the mean squared difference of consecutive joined logits
     (before the softmax), padding zeroed, times the batch size, ``gamma = 0.5``.
   - ``L_pd`` (Eq. 4), generator steps only: ``(V - PPL) / V`` times the batch size, ``eta = 4``,
     where ``PPL`` is the perplexity of the generator's softmax averaged over every joined output of the
     batch (fairseq ``prob_perplexity``; fairseq also averages the padded rows, which are uniform
     distributions, this book only the valid ones).
5. **Auxiliary unit loss** (wav2vec-U 2.0, Liu et al. 2022, Sec. 3; fairseq ``mmi_weight``,
   ``generator_residual``), off by default: a residual linear layer reads the dropped-out segment features
   first (``inter = in_proj(dropout(S))``, ``S + inter`` goes on to the convolution), and a linear decoder on
   ``inter`` predicts a k-means unit of MFCC frames for every segment, a cross-entropy (targets ``-1``
   ignored) averaged over every step of the batch, padding included, times the batch size and the weight
   (``w2vu2.yaml``: 0.5), on generator steps only. It ties the generator's output back to its input.
6. **Alternation** (fairseq ``discrim_step``): odd updates train ``C``, even ones ``G``; each has its
   own Adam (``w2vu.yaml``: ``G`` lr 4e-4, ``C`` lr 5e-4 with decoupled weight decay 1e-4, betas
   (0.5, 0.98), eps 1e-6, constant rates, gradients clipped at 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import config_error
from ..nn.conv import lengths_to_padding_mask

__all__ = ["GanConfig", "TimeConv", "Generator", "Discriminator", "Wav2VecU", "join_runs", "gradient_penalty",
           "smoothness_penalty", "diversity_penalty"]


@dataclass(frozen=True)
class GanConfig:
    """The GAN of wav2vec-U; defaults are ``w2vu.yaml``'s."""

    input_dim: int = 512               # PCA dimension of the segment features (Sec. 2.3)
    num_phones: int = 40               # output vocabulary: the phones and silence (Sec. 3.1)
    generator_kernel: int = 4
    generator_dropout: float = 0.1
    discriminator_dim: int = 384
    discriminator_depth: int = 2
    discriminator_kernel: int = 6
    discriminator_dropout: float = 0.0
    gradient_penalty: float = 1.5      # lambda
    smoothness_weight: float = 0.5     # gamma
    code_penalty: float = 4.0          # eta
    penalty_norm: str = "time"         # L_gp's norm: "time" (fairseq) or "sample" (the paper's Eq. 2)
    residual: bool = False             # fairseq generator_residual (w2vu2.yaml: true)
    aux_units: int = 0                 # fairseq target_dim: the k-means units of the auxiliary loss (w2vu2: 64)
    aux_weight: float = 0.0            # fairseq mmi_weight (w2vu2.yaml: 0.5); 0: no auxiliary loss
    gumbel: bool = False               # fairseq gumbel: in training, a Gumbel-softmax sample instead of the softmax
    hard_gumbel: bool = False          # fairseq hard_gumbel: the sample's one-hot, with the soft sample's gradient
    temp: tuple[float, float, float] = (2.0, 0.1, 0.99995)   # fairseq temp: its temperature (start, floor, decay)

    def __post_init__(self) -> None:
        for f in ("input_dim", "num_phones", "generator_kernel", "discriminator_dim", "discriminator_depth",
                  "discriminator_kernel"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1 or (f == "num_phones" and v < 2):
                raise config_error("GanConfig", f, "a positive integer" + (" >= 2" if f == "num_phones" else ""), v)
        for f in ("generator_dropout", "discriminator_dropout"):
            if not 0 <= getattr(self, f) < 1:
                raise config_error("GanConfig", f, "a probability in [0, 1)", getattr(self, f))
        if self.penalty_norm not in ("time", "sample"):
            raise config_error("GanConfig", "penalty_norm", "'time' (fairseq) or 'sample' (the paper)", self.penalty_norm)
        for f in ("gradient_penalty", "smoothness_weight", "code_penalty", "aux_weight"):
            if not getattr(self, f) >= 0:
                raise config_error("GanConfig", f, "a weight >= 0", getattr(self, f))
        t = self.temp
        if not (len(t) == 3 and t[0] >= t[1] > 0 and 0 < t[2] <= 1):
            raise config_error("GanConfig", "temp", "(start, floor, decay) with start >= floor > 0 and 0 < decay <= 1", t)
        if self.aux_weight > 0 and not (self.residual and isinstance(self.aux_units, int) and self.aux_units >= 2):
            raise config_error("GanConfig", "aux_units", "at least 2 units and residual=True with aux_weight > 0 "
                               "(the decoder reads the residual layer's output)", (self.aux_units, self.residual))


def lengths_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) boolean mask, True on the valid steps (the complement of fairseq's padding mask)."""
    return ~lengths_to_padding_mask(lengths, size)


class TimeConv(nn.Conv1d):
    """A convolution over time on (B, T, C) tensors, padded with ``left`` zeros before and ``right`` after.

    Written as one matrix product over the ``k`` shifted copies of the input side by side (im2col): the
    GAN's convolutions are a few channels wide, where PyTorch's convolution routines (NNPACK forward, a
    per-sample backward without oneDNN) cost most of an update and its gradient penalty's double backward
    (``bench/bench_gan.py``). The weights are ``nn.Conv1d``'s, so checkpoints load into either.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, left: int, right: int, bias: bool = True):
        super().__init__(c_in, c_out, kernel, bias=bias)
        self.left, self.right = left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        x = F.pad(x, (0, 0, self.left, self.right))                      # (B, T + left + right, C)
        t = x.size(1) - k + 1
        windows = torch.cat([x[:, j:j + t] for j in range(k)], dim=-1)    # (B, t, k * C), tap-major
        weight = self.weight.permute(0, 2, 1).reshape(self.out_channels, -1)
        return F.linear(windows, weight, self.bias)


class Generator(nn.Module):
    """Segment representations (B, T, D) -> phone logits (B, T + 1, V) (fairseq ``Generator``), with the
    residual layer and the unit decoder of wav2vec-U 2.0 when the configuration asks for them."""

    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.dropout = nn.Dropout(cfg.generator_dropout)
        k = cfg.generator_kernel
        self.proj = TimeConv(cfg.input_dim, cfg.num_phones, k, k // 2, k // 2, bias=False)
        self.in_proj = nn.Linear(cfg.input_dim, cfg.input_dim) if cfg.residual else None
        self.decoder = nn.Linear(cfg.input_dim, cfg.aux_units) if cfg.aux_weight > 0 else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, *, units: bool = False):
        """Logits and their lengths; with ``units``, also the decoder's unit logits (B, T, aux_units)."""
        x = x * lengths_mask(lengths, x.size(1))[..., None]     # padded segments read as the conv's zeros
        inter = None
        if self.in_proj is not None:
            inter = self.in_proj(self.dropout(x))
            x = x + inter
        logits = self.proj(self.dropout(x))
        out = logits, lengths + (logits.size(1) - x.size(1))
        return (*out, self.decoder(inter)) if units else out


def join_runs(logits: torch.Tensor, lengths: torch.Tensor, *, sample: bool,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """JOIN: merge runs of consecutive outputs with the same argmax into one step.

    ``sample=True`` (training) keeps one output of each run drawn uniformly (fairseq picks offset
    ``floor(count * u)``); ``sample=False`` averages the run. Returns the joined logits (B, M, V), zero
    beyond each row's number of runs, and that number per row.
    """
    b, t, _ = logits.shape
    valid = lengths_mask(lengths, t)
    pred = logits.detach().argmax(-1)
    starts = valid.clone()
    starts[:, 1:] &= pred[:, 1:] != pred[:, :-1]
    run = starts.long().cumsum(1) - 1                                     # run index of every output
    num_runs = starts.sum(1)
    m = max(int(num_runs.max()), 1)
    member = (run[:, None, :] == torch.arange(m)[None, :, None]) & valid[:, None, :]   # (B, M, T)
    counts = member.sum(-1)                                               # 0 for the rows' padding
    if sample:
        first = member.float().argmax(-1)                                 # first output of each run
        u = torch.rand(b, m, generator=generator)
        pick = first + (counts * u).long().clamp(max=(counts - 1).clamp(min=0))
        select = F.one_hot(pick, t).to(logits.dtype) * (counts > 0)[..., None]
    else:
        select = member.to(logits.dtype) / counts.clamp(min=1)[..., None]
    return torch.bmm(select, logits), num_runs


class Discriminator(nn.Module):
    """Phone distributions (B, T, V) -> one real-versus-generated logit per sequence (fairseq
    ``Discriminator``: larger means "generated")."""

    def __init__(self, cfg: GanConfig):
        super().__init__()
        d, k = cfg.discriminator_dim, cfg.discriminator_kernel
        # causal: ``k - 1`` zeros on the left only (fairseq pads ``k - 1`` on both sides, then
        # ``SamePad(causal=True)`` drops the last ``k - 1`` outputs: the same thing)
        # (w2vu.yaml has no dropout here: an identity then, since a dropout of 0 still costs a pass over the input)
        drop = lambda: nn.Dropout(cfg.discriminator_dropout) if cfg.discriminator_dropout > 0 else nn.Identity()
        inner = []
        for _ in range(cfg.discriminator_depth - 1):
            inner += [TimeConv(d, d, k, k - 1, 0), drop(), nn.GELU()]
        self.net = nn.Sequential(TimeConv(cfg.num_phones, d, k, k - 1, 0), drop(),
                                 *inner, TimeConv(d, 1, k, k - 1, 0))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        y = self.net(x).squeeze(-1)                                       # (B, T)
        if lengths is None:                                               # every step counts (fairseq's penalty)
            return y.mean(1)
        return (y * lengths_mask(lengths, y.size(1))).sum(1) / lengths.clamp(min=1)


def gradient_penalty(discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None, norm: str = "time") -> torch.Tensor:
    """``sum over (sample, phone) of (||dC/dx||_time - 1)^2`` at ``x = a real + (1 - a) fake``,
    ``a ~ U(0, 1)`` per sample, both cut to the shorter batch and length (fairseq
    ``calc_gradient_penalty``; see the module notes for the norm). ``norm="sample"``: the paper's
    ``sum over samples of (||dC/dx|| - 1)^2``, the norm over time and phones together."""
    b, t = min(real.size(0), fake.size(0)), min(real.size(1), fake.size(1))
    real, fake = real[:b, :t], fake[:b, :t]
    # [eq w2vu-gp]
    a = torch.rand(b, 1, 1, generator=generator).to(real)
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    score = discriminator(x)
    grad, = torch.autograd.grad(score.sum(), x, create_graph=True)
    norms = grad.norm(2, dim=1) if norm == "time" else grad.flatten(1).norm(2, dim=1)
    return ((norms - 1) ** 2).sum()
    # [/eq w2vu-gp]


def smoothness_penalty(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of consecutive joined logits, zero where the later step is padding
    (fairseq: ``mse_loss(...)[padding[:, 1:]] = 0`` then ``.mean()``). A batch whose every output joins
    into one run has no pair: 0 (fairseq's mean of an empty tensor is NaN, which ends the run)."""
    if logits.size(1) < 2:
        return logits.sum() * 0
    # [eq w2vu-smooth]
    diff = (logits[:, :-1] - logits[:, 1:]) ** 2
    return (diff * lengths_mask(lengths, logits.size(1))[:, 1:, None]).mean()
    # [/eq w2vu-smooth]


def diversity_penalty(logits: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V - PPL) / V`` and ``PPL``, the perplexity of the softmax averaged over the batch's valid
    steps (paper Eq. 4 as fairseq's ``code_pen``)."""
    v = logits.size(-1)
    # [eq w2vu-pd]
    probs = logits[lengths_mask(lengths, logits.size(1))].softmax(-1).mean(0)
    ppl = torch.exp(-(probs * torch.log(probs + 1e-7)).sum())
    return (v - ppl) / v, ppl
    # [/eq w2vu-pd]


class Wav2VecU(nn.Module):
    """Generator and discriminator, with the loss of either step (Eq. 1 with its penalties)."""

    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)
        self.num_updates = 0

    def set_num_updates(self, num_updates: int) -> None:
        """The updates made so far (fairseq ``set_num_updates``), for the Gumbel temperature."""
        self.num_updates = num_updates

    @property
    def temperature(self) -> float:
        """fairseq's ``curr_temp``: ``max(start * decay ** updates, floor)``."""
        start, floor, decay = self.cfg.temp
        return max(start * decay ** self.num_updates, floor)

    def distributions(self, logits: torch.Tensor) -> torch.Tensor:
        """What the discriminator reads of the generator's joined logits: their softmax, or in training with
        ``gumbel`` a Gumbel-softmax sample at :attr:`temperature`, one-hot with ``hard_gumbel`` (fairseq
        ``Wav2vec_U.normalize``)."""
        if self.training and self.cfg.gumbel:
            return F.gumbel_softmax(logits, tau=self.temperature, hard=self.cfg.hard_gumbel)
        return logits.softmax(-1)

    def generate(self, features: torch.Tensor, lengths: torch.Tensor, *, sample: bool | None = None,
                 rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Joined phone logits (B, M, V) and their lengths; sampled JOIN in training mode."""
        logits, out_lengths = self.generator(features, lengths)
        return join_runs(logits, out_lengths, sample=self.training if sample is None else sample, generator=rng)

    def discriminator_loss(self, features: torch.Tensor, lengths: torch.Tensor, phones: torch.Tensor,
                           phone_lengths: torch.Tensor, rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Losses of a discriminator step: generated sequences labelled 1, text 0, plus lambda L_gp."""
        with torch.no_grad():
            fake_logits, fake_lengths = self.generate(features, lengths, rng=rng)
        fake = self.distributions(fake_logits)
        real = F.one_hot(phones, self.cfg.num_phones).to(fake) * lengths_mask(phone_lengths, phones.size(1))[..., None]
        # [eq w2vu-d]
        d_fake = self.discriminator(fake, fake_lengths)
        d_real = self.discriminator(real, phone_lengths)
        out = {"dense_d": F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake), reduction="sum"),
               "token_d": F.binary_cross_entropy_with_logits(d_real, torch.zeros_like(d_real), reduction="sum")}
        # [/eq w2vu-d]
        if self.cfg.gradient_penalty > 0:
            out["grad_pen"] = self.cfg.gradient_penalty * gradient_penalty(self.discriminator, real, fake, rng,
                                                                                self.cfg.penalty_norm)
        return out

    def generator_loss(self, features: torch.Tensor, lengths: torch.Tensor, rng: torch.Generator | None = None,
                       units: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Losses of a generator step (target "real" for its output, gamma L_sp, eta L_pd, and the auxiliary
        loss on the segments' ``units`` (B, T), ``-1`` where there is none, when the model has a decoder), and
        the perplexity of its average output."""
        aux = self.generator.decoder is not None and units is not None
        raw, raw_lengths, *unit_logits = self.generator(features, lengths, units=aux)
        logits, out_lengths = join_runs(raw, raw_lengths, sample=self.training, generator=rng)
        # [eq w2vu-g]
        d_fake = self.discriminator(self.distributions(logits), out_lengths)
        batch = features.size(0)                                          # fairseq sample_size
        out = {"dense_g": F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake), reduction="sum")}
        pd, ppl = diversity_penalty(logits, out_lengths)
        if self.cfg.code_penalty > 0:
            out["code_pen"] = self.cfg.code_penalty * batch * pd
        if self.cfg.smoothness_weight > 0:
            out["smoothness"] = self.cfg.smoothness_weight * batch * smoothness_penalty(logits, out_lengths)
        # [/eq w2vu-g]
        if aux:
            # [eq w2vu2-aux]
            t = min(units.size(1), unit_logits[0].size(1))
            ce = F.cross_entropy(unit_logits[0][:, :t].transpose(1, 2), units[:, :t], ignore_index=-1, reduction="none")
            out["aux"] = self.cfg.aux_weight * batch * ce.mean()
            # [/eq w2vu2-aux]
        return out, ppl.detach()
