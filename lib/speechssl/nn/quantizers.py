"""Vector quantizers with groups of codebooks: Gumbel-softmax and online k-means (vq-wav2vec).

vq-wav2vec (Baevski, Schneider & Auli 2020, Sec. 3) replaces each dense frame ``z`` by a
vector ``z^`` built from a finite codebook, and trains through the discrete choice.

**Groups** (Sec. 3.3). One codebook of ``V`` entries over the whole vector tends to collapse to
a few entries, so ``z`` is split into ``G`` groups; each group picks one of ``V`` entries of
size ``d / G`` and the picks are concatenated. A frame is then a tuple of ``G`` indices, i.e.
one of up to ``V^G`` codewords (paper: ``G = 2, V = 320``, 102,400 possible codewords).
With ``combine_groups=True`` all groups share the same ``V`` entries (fairseq ``--combine-groups``,
used for the released models), which halves the codebook parameters.

**Gumbel-softmax** (Sec. 3.1, :class:`GumbelQuantizer`). A small network maps ``z`` to ``G x V``
logits. In training the hard one-hot ``argmax_j (l_j + g_j) / tau`` with Gumbel noise ``g`` is
used in the forward pass, and the gradient of the soft Gumbel-softmax in the backward pass
(straight-through, ``F.gumbel_softmax(hard=True)``). At evaluation the noise is dropped and the
plain argmax is used. The temperature ``tau`` is annealed linearly from 2 to 0.5 over the
first 70% of the updates and then kept at 0.5 (Sec. 5.2), so the model can first try codewords
softly before committing. fairseq's implementation decays it exponentially instead
(``--vq-temp (2, 0.5, 0.999995)``, which reaches 0.5 after 277k of 400k updates, about 69%).

**K-means** (Sec. 3.2, :class:`KMeansQuantizer`). The nearest codeword in Euclidean distance
is chosen per group; the forward pass outputs the codeword, the backward pass copies the
gradient of ``z^`` onto ``z`` (straight-through, ``dL/dz = dL/dz^``). The codewords themselves
are trained by the VQ-VAE terms

    ||sg(z) - z^||^2 + gamma ||z - sg(z^)||^2,     gamma = 0.25,

added to the model loss (fairseq ``--loss-weights [1]``). Like fairseq these squared norms
are averaged over the vector dimension (a mean squared error), and like fairseq ``z`` first
goes through a grouped 1x1 projection and a group norm (``KmeansVectorQuantizer.projection``).

Both log the *code perplexity* of the hard assignments and (Gumbel) the *prob perplexity* of
the average softmax, summed over groups, with :func:`speechssl.metrics.codebook_perplexity`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import codebook_perplexity
from ..errors import config_error
from .conv import MaskedGroupNorm, lengths_to_padding_mask, make_activation

__all__ = [
    "GumbelQuantizer",
    "KMeansQuantizer",
    "QuantizerOutput",
    "codes_to_ids",
    "ids_to_codes",
    "exponential_temperature",
    "linear_temperature",
]


def linear_temperature(num_updates: int, max_temp: float, min_temp: float, anneal_updates: int) -> float:
    """``max_temp`` at update 0, linearly down to ``min_temp`` at ``anneal_updates``, then constant.

    vq-wav2vec Sec. 5.2: from 2 to 0.5 over the first 70% of updates.
    """
    if anneal_updates <= 0:
        return float(min_temp)
    frac = min(max(num_updates, 0) / anneal_updates, 1.0)
    return float(max_temp + (min_temp - max_temp) * frac)


def exponential_temperature(num_updates: int, max_temp: float, min_temp: float, decay: float) -> float:
    """``max(max_temp * decay ** num_updates, min_temp)``: wav2vec 2.0's schedule (Sec. 4.2,
    fairseq ``latent_temp = (2, 0.5, 0.999995)``: 2 at update 0, 0.5 after about 277k updates)."""
    return float(max(max_temp * decay ** max(num_updates, 0), min_temp))


def codes_to_ids(codes: torch.Tensor, num_vars: int) -> torch.Tensor:
    """One integer per frame from ``G`` group indices: ``sum_g codes[..., g] * V^(G-1-g)``.

    For ``G = 2`` this is ``g0 * V + g1`` in ``[0, V^2)`` (fairseq
    ``GumbelVectorQuantizer.to_codebook_index``). Negative codes (padding) give -1.
    ``codes``: ``(..., G)`` -> ``(...)`` int64.
    """
    codes = codes.long()
    groups = codes.shape[-1]
    weights = num_vars ** torch.arange(groups - 1, -1, -1, device=codes.device, dtype=torch.int64)
    ids = (codes * weights).sum(-1)
    return torch.where((codes < 0).any(-1), torch.full_like(ids, -1), ids)


def ids_to_codes(ids: torch.Tensor, num_vars: int, groups: int) -> torch.Tensor:
    """Inverse of :func:`codes_to_ids`: ``(...)`` -> ``(..., G)`` int64."""
    ids = ids.long()
    out = []
    for g in range(groups - 1, -1, -1):
        out.append(torch.remainder(ids, num_vars))
        ids = torch.div(ids, num_vars, rounding_mode="floor")
    return torch.stack(out[::-1], dim=-1)


@dataclass
class QuantizerOutput:
    """What a quantizer returns.

    - ``x``: ``(B, T, D)`` quantized vectors ``z^`` (padding frames 0)
    - ``codes``: ``(B, T, G)`` int64 chosen entry per group (padding frames -1)
    - ``loss``: scalar auxiliary loss to add to the model loss (k-means VQ terms; 0 for Gumbel)
    - ``code_perplexity``: scalar, perplexity of the hard choices summed over groups (max ``G V``)
    - ``prob_perplexity``: scalar, perplexity of the average softmax summed over groups (Gumbel)
    - ``temperature``: the Gumbel temperature used (Gumbel)
    - ``probs``: ``(B, T, G, V)`` softmax of the logits (Gumbel), for plots and diversity losses
    """

    x: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    code_perplexity: torch.Tensor
    prob_perplexity: torch.Tensor | None = None
    temperature: float | None = None
    probs: torch.Tensor | None = None


def _valid_frames(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``(B, T)`` bool, True at valid frames."""
    bsz, tsz = x.shape[:2]
    if lengths is None:
        return torch.ones(bsz, tsz, dtype=torch.bool, device=x.device)
    return ~lengths_to_padding_mask(lengths.to(x.device), tsz)


def _check_codebook(owner: str, input_dim: int, num_vars: int, groups: int, code_dim: int) -> None:
    if input_dim < 1:
        raise config_error(owner, "input_dim", "an integer >= 1", input_dim)
    if num_vars < 2:
        raise config_error(owner, "num_vars", "an integer >= 2 (entries per codebook group, paper V = 320)", num_vars)
    if groups < 1:
        raise config_error(owner, "groups", "an integer >= 1 (paper G = 2)", groups)
    if code_dim < 1 or code_dim % groups != 0:
        raise config_error(owner, "code_dim", f"a positive multiple of groups={groups}", code_dim)


class GumbelQuantizer(nn.Module):
    """Gumbel-softmax quantization with ``G`` groups of ``V`` entries (vq-wav2vec Sec. 3.1).

    Args:
        input_dim: channels of ``z``.
        num_vars: ``V``, entries per group (paper 320).
        groups: ``G`` (paper 2).
        code_dim: size of the output vector; each entry has ``code_dim / G`` dimensions
            (fairseq ``vq_dim``, default the input size).
        combine_groups: share one set of ``V`` entries between the groups.
        proj_depth: layers of the logit network. 2 is the paper's "a linear layer, followed by a
            ReLU and another linear" (fairseq ``--vq-depth 2``); 1 is a single linear layer.
        proj_factor: width of the hidden layer relative to ``input_dim`` (fairseq
            ``weight_proj_factor=2``).
        activation: non-linearity of the logit network (paper ReLU; fairseq's command GELU).
        max_temp, min_temp, anneal_updates: linear temperature schedule (paper 2 -> 0.5 over
            the first 70% of updates).
        temp_decay: when given, the exponential schedule of wav2vec 2.0 instead:
            ``max(max_temp * temp_decay ** updates, min_temp)`` (:func:`exponential_temperature`).

    Shapes: ``x`` ``(B, T, C)``, ``lengths`` ``(B,)`` -> :class:`QuantizerOutput`.
    """

    def __init__(self, input_dim: int, num_vars: int = 320, groups: int = 2, code_dim: int | None = None, *,
                 combine_groups: bool = False, proj_depth: int = 2, proj_factor: int = 2,
                 activation: str = "relu", max_temp: float = 2.0, min_temp: float = 0.5,
                 anneal_updates: int = 280_000, temp_decay: float | None = None) -> None:
        super().__init__()
        code_dim = input_dim if code_dim is None else code_dim
        _check_codebook("GumbelQuantizer", input_dim, num_vars, groups, code_dim)
        if proj_depth < 1:
            raise config_error("GumbelQuantizer", "proj_depth", "an integer >= 1", proj_depth)
        if proj_factor < 1:
            raise config_error("GumbelQuantizer", "proj_factor", "an integer >= 1", proj_factor)
        if not (max_temp >= min_temp > 0):
            raise config_error("GumbelQuantizer", "max_temp/min_temp", "max_temp >= min_temp > 0",
                               (max_temp, min_temp))
        if anneal_updates < 0:
            raise config_error("GumbelQuantizer", "anneal_updates", "an integer >= 0", anneal_updates)
        if temp_decay is not None and not 0.0 < temp_decay <= 1.0:
            raise config_error("GumbelQuantizer", "temp_decay", "a factor in (0, 1] or None", temp_decay)
        self.temp_decay = temp_decay
        self.num_vars, self.groups, self.code_dim = num_vars, groups, code_dim
        self.combine_groups = combine_groups
        self.max_temp, self.min_temp, self.anneal_updates = max_temp, min_temp, anneal_updates
        n_books = 1 if combine_groups else groups
        # codebook entries: (G' * V, d / G), fairseq initialises them uniformly in [0, 1)
        self.codebook = nn.Parameter(torch.rand(n_books * num_vars, code_dim // groups))
        if proj_depth == 1:
            self.logits_proj = nn.Linear(input_dim, groups * num_vars)
            nn.init.normal_(self.logits_proj.weight, mean=0.0, std=1.0)  # fairseq init for depth 1
            nn.init.zeros_(self.logits_proj.bias)
        else:
            inner = input_dim * proj_factor
            layers: list[nn.Module] = []
            d = input_dim
            for _ in range(proj_depth - 1):
                layers += [nn.Linear(d, inner), make_activation(activation)]
                d = inner
            layers.append(nn.Linear(d, groups * num_vars))
            self.logits_proj = nn.Sequential(*layers)

    def temperature(self, num_updates: int) -> float:
        if self.temp_decay is not None:
            return exponential_temperature(num_updates, self.max_temp, self.min_temp, self.temp_decay)
        return linear_temperature(num_updates, self.max_temp, self.min_temp, self.anneal_updates)

    def entries(self) -> torch.Tensor:
        """``(G, V, d / G)``: the entries each group chooses from (shared when ``combine_groups``)."""
        cb = self.codebook.view(-1, self.num_vars, self.code_dim // self.groups)
        return cb.expand(self.groups, -1, -1) if self.combine_groups else cb

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, num_updates: int = 0, *,
                deterministic: bool | None = None) -> QuantizerOutput:
        """Quantize ``x``; ``deterministic`` (default: ``not self.training``) uses the plain argmax."""
        if x.dim() != 3:
            raise ValueError(f"GumbelQuantizer expects x of shape (B, T, C), got {tuple(x.shape)}")
        bsz, tsz, _ = x.shape
        deterministic = (not self.training) if deterministic is None else deterministic
        logits = self.logits_proj(x).float().view(bsz, tsz, self.groups, self.num_vars)  # (B, T, G, V)
        valid = _valid_frames(x, lengths)                                                # (B, T)
        tau = self.temperature(num_updates)
        # [eq gumbel]
        if deterministic:
            one_hot = F.one_hot(logits.argmax(-1), self.num_vars).to(logits.dtype)
        else:
            one_hot = F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)             # straight-through
        codes = one_hot.argmax(-1)                                                       # (B, T, G)
        # pick one entry per group and concatenate: (B, T, G, V) x (G, V, d/G) -> (B, T, G, d/G)
        q = torch.einsum("btgv,gvd->btgd", one_hot, self.entries().float()).reshape(bsz, tsz, self.code_dim)
        # [/eq gumbel]
        q = q.masked_fill(~valid.unsqueeze(-1), 0.0).type_as(x)
        probs = logits.softmax(-1)
        sel = probs[valid]                                                               # (N, G, V)
        prob_ppl = codebook_perplexity(sel).sum() if sel.shape[0] else probs.sum() * 0.0
        with torch.no_grad():
            code_ppl = (codebook_perplexity(F.one_hot(codes[valid], self.num_vars))
                        .sum() if sel.shape[0] else torch.zeros((), device=x.device))
        codes = codes.masked_fill(~valid.unsqueeze(-1), -1)
        return QuantizerOutput(x=q, codes=codes, loss=logits.sum() * 0.0, code_perplexity=code_ppl,
                               prob_perplexity=prob_ppl, temperature=tau, probs=probs)

    def extra_repr(self) -> str:
        return (f"groups={self.groups}, num_vars={self.num_vars}, code_dim={self.code_dim}, "
                f"combine_groups={self.combine_groups}, temp={self.max_temp}->{self.min_temp} "
                f"over {self.anneal_updates} updates")


class KMeansQuantizer(nn.Module):
    """Online k-means quantization with ``G`` groups of ``V`` entries (vq-wav2vec Sec. 3.2).

    Args:
        input_dim: channels of ``z``; the output has the same size (straight-through needs it).
        num_vars: ``V`` entries per group (paper 320).
        groups: ``G`` (paper 2).
        combine_groups: share the entries between groups.
        gamma: commitment weight (paper ``gamma = 0.25``).
        project: first apply a grouped 1x1 projection and a group norm with ``G`` groups
            (fairseq ``KmeansVectorQuantizer.projection``; keeps ``z`` on the codebook's scale).

    Shapes: ``x`` ``(B, T, C)``, ``lengths`` ``(B,)`` -> :class:`QuantizerOutput` whose ``loss``
    is ``mse(z^, sg(z)) + gamma * mse(z, sg(z^))`` over valid frames.
    """

    def __init__(self, input_dim: int, num_vars: int = 320, groups: int = 2, *, combine_groups: bool = False,
                 gamma: float = 0.25, project: bool = True) -> None:
        super().__init__()
        _check_codebook("KMeansQuantizer", input_dim, num_vars, groups, input_dim)
        if gamma < 0:
            raise config_error("KMeansQuantizer", "gamma", "a number >= 0 (paper 0.25)", gamma)
        self.num_vars, self.groups, self.code_dim = num_vars, groups, input_dim
        self.combine_groups, self.gamma = combine_groups, gamma
        n_books = 1 if combine_groups else groups
        self.codebook = nn.Parameter(0.01 * torch.randn(n_books, num_vars, input_dim // groups))  # fairseq init
        if project:
            self.proj = nn.Conv1d(input_dim, input_dim, 1, groups=groups, bias=False)
            self.proj_norm: MaskedGroupNorm | None = MaskedGroupNorm(groups, input_dim)
        else:
            self.proj, self.proj_norm = None, None

    def entries(self) -> torch.Tensor:
        """``(G, V, d / G)`` entries per group."""
        return self.codebook.expand(self.groups, -1, -1) if self.combine_groups else self.codebook

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, num_updates: int = 0, *,
                deterministic: bool | None = None) -> QuantizerOutput:
        if x.dim() != 3:
            raise ValueError(f"KMeansQuantizer expects x of shape (B, T, C), got {tuple(x.shape)}")
        bsz, tsz, dim = x.shape
        valid = _valid_frames(x, lengths)                                   # (B, T)
        ze = x
        if self.proj is not None:
            ze = self.proj_norm(self.proj(x.transpose(1, 2)), lengths).transpose(1, 2)  # (B, T, C)
        ze = ze.float()
        zg = ze.view(bsz, tsz, self.groups, dim // self.groups)            # (B, T, G, d)
        cb = self.entries().float()                                         # (G, V, d)
        # squared Euclidean distances |z|^2 - 2 z.e + |e|^2: (B, T, G, V)
        dist = (zg.pow(2).sum(-1, keepdim=True) - 2 * torch.einsum("btgd,gvd->btgv", zg, cb)
                + cb.pow(2).sum(-1)[None, None])
        codes = dist.argmin(-1)                                             # (B, T, G)
        # the chosen entries through a one-hot product, as in GumbelQuantizer: the backward pass is then a
        # matrix product, whose result does not depend on thread scheduling (indexing would scatter-add the
        # codebook gradient with atomics on the CPU, and two identical runs would drift apart)
        one_hot = F.one_hot(codes, self.num_vars).to(cb.dtype)             # (B, T, G, V)
        zq = torch.einsum("btgv,gvd->btgd", one_hot, cb).reshape(bsz, tsz, dim)
        # [eq vq-loss]
        out = ze + (zq - ze).detach()                                       # straight-through
        m = valid.unsqueeze(-1).to(ze.dtype)
        denom = (m.sum() * dim).clamp_min(1.0)
        latent = (((zq - ze.detach()) ** 2) * m).sum() / denom             # moves the codewords
        commit = (((ze - zq.detach()) ** 2) * m).sum() / denom             # keeps z near its codeword
        # [/eq vq-loss]
        with torch.no_grad():
            sel = codes[valid]
            code_ppl = (codebook_perplexity(F.one_hot(sel, self.num_vars)).sum() if sel.shape[0]
                        else torch.zeros((), device=x.device))
        return QuantizerOutput(
            x=(out * m).type_as(x), codes=codes.masked_fill(~valid.unsqueeze(-1), -1),
            loss=latent + self.gamma * commit, code_perplexity=code_ppl)

    def extra_repr(self) -> str:
        return (f"groups={self.groups}, num_vars={self.num_vars}, combine_groups={self.combine_groups}, "
                f"gamma={self.gamma}")
