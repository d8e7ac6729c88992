"""Training wav2vec-U's GAN: alternating steps on pre-tensorised data, evaluation and selection.

The generator has about ``D x V x 4`` weights (10k at tiny scale) and its input is a few dozen segments
per utterance, so an update is a handful of small matrix products. What would make it slow is Python
work per utterance, so every utterance and every sentence is padded once into one tensor
(:class:`GanData`) and a batch is an index into it, drawn from a seeded ``torch.Generator``.

The schedule is fairseq's (``w2vu.yaml``; ``Wav2vec_U.discrim_step``): update ``n`` (from 1) trains the
discriminator when ``n`` is odd and the generator when it is even, each with its own Adam (betas
(0.5, 0.98), eps 1e-6; the discriminator's with decoupled weight decay 1e-4, fairseq's Adam), constant
learning rates, and the stepping network's gradients clipped to norm 5 (``clip_norm``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, save_checkpoint
from .errors import config_error
from .metrics import phone_error_rate
from .models.wav2vec_u import Wav2VecU
from .ngram import PhoneLM
from .unpaired import Selection, phones_without_silence, weighted_lm_ppl

__all__ = ["GanData", "GanTrainConfig", "train_gan", "probe_discriminator", "track", "decode", "evaluate",
           "linear_ctc"]


@dataclass
class GanData:
    """Segment features of the unlabelled audio (N, T, D) and phone ids of the unpaired text (M, L); for the
    auxiliary loss of wav2vec-U 2.0, a k-means unit of every segment (N, T), ``-1`` where there is none."""

    features: torch.Tensor
    lengths: torch.Tensor
    phones: torch.Tensor
    phone_lengths: torch.Tensor
    units: torch.Tensor | None = None


@dataclass(frozen=True)
class GanTrainConfig:
    """Defaults: ``w2vu.yaml``."""

    batch_size: int = 160
    max_updates: int = 150_000
    lr_generator: float = 4e-4
    lr_discriminator: float = 5e-4
    betas: tuple[float, float] = (0.5, 0.98)
    eps: float = 1e-6
    weight_decay_discriminator: float = 1e-4
    clip_norm: float = 5.0
    eval_every: int = 1000                 # fairseq validate_interval_updates / save_interval_updates
    seed: int = 0

    def __post_init__(self) -> None:
        for f in ("batch_size", "max_updates", "eval_every"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise config_error("GanTrainConfig", f, "a positive integer", getattr(self, f))
        for f in ("lr_generator", "lr_discriminator"):
            if not getattr(self, f) > 0:
                raise config_error("GanTrainConfig", f, "a learning rate > 0", getattr(self, f))


@torch.no_grad()
def decode(model: Wav2VecU, features: torch.Tensor, lengths: torch.Tensor, batch_size: int = 256) -> list[list[int]]:
    """Viterbi (argmax) phone ids of every utterance: JOIN with averaged runs, then the argmax per run
    (fairseq ``w2vu_generate.py`` with ``viterbi``; ``sil`` is removed by the caller)."""
    was = model.training
    model.eval()
    out: list[list[int]] = []
    for i in range(0, len(features), batch_size):
        x, n = features[i:i + batch_size], lengths[i:i + batch_size]
        logits, m = model.generate(x[:, :int(n.max())], n, sample=False)
        ids = logits.argmax(-1)
        out += [ids[b, :m[b]].tolist() for b in range(len(x))]
    model.train(was)
    return out


def evaluate(model: Wav2VecU, features: torch.Tensor, lengths: torch.Tensor, lm: PhoneLM, inventory: Sequence[str],
             references: Sequence[Sequence[str]] | None = None) -> tuple[Selection, float | None, list[list[str]]]:
    """Selection metric of the model's output on ``features`` and, given references, its phone error rate."""
    hyps = [phones_without_silence(h, inventory) for h in decode(model, features, lengths)]
    per = phone_error_rate(references, hyps).rate if references is not None else None
    return weighted_lm_ppl(lm, hyps, inventory), per, hyps


def _differences(saved: dict, current: dict) -> str:
    """``part.field saved -> current`` for every setting that differs."""
    out = []
    for part, now in current.items():
        was = saved.get(part)
        if isinstance(now, dict) and isinstance(was, dict):
            out += [f"{part}.{k} {was.get(k)!r} -> {v!r}" for k, v in now.items() if was.get(k) != v]
        elif was != now:
            out.append(f"{part} {was!r} -> {now!r}")
    return ", ".join(out)


def _with_defaults(config: dict) -> dict:
    """A saved run's settings, with the default of every field added to the configurations since it was written
    (a run of the same settings made before a field existed is the same run)."""
    from .models.wav2vec_u import GanConfig

    out = dict(config)
    for part, defaults in (("model", GanConfig()), ("train", GanTrainConfig())):
        if isinstance(out.get(part), dict):
            out[part] = {**dataclasses.asdict(defaults), **out[part]}
    return out


def _read_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a pickle error: damaged after it was written
        raise CheckpointError(f"{path}: cannot resume the GAN from it: the file is truncated or corrupt "
                              f"({type(e).__name__}); delete it to start the run over") from None
    if not isinstance(state, dict) or "update" not in state:
        raise CheckpointError(f"{path}: expected a GAN checkpoint of train_gan, found another kind of file")
    return state


def _adam(params, lr: float, cfg: GanTrainConfig, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=weight_decay)


def _audio_batch(data: GanData, cfg: GanTrainConfig, rng: torch.Generator):
    """A batch of utterances drawn from ``rng``: their indices, features cut to the longest, and lengths."""
    idx = torch.randint(len(data.features), (min(cfg.batch_size, len(data.features)),), generator=rng)
    lengths = data.lengths[idx]
    return idx, data.features[idx, :int(lengths.max())], lengths


def _discriminator_losses(model: Wav2VecU, data: GanData, cfg: GanTrainConfig, rng: torch.Generator,
                          x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """The discriminator step's losses on the audio batch ``x`` and a batch of sentences drawn from ``rng``."""
    t = torch.randint(len(data.phones), (min(cfg.batch_size, len(data.phones)),), generator=rng)
    tl = data.phone_lengths[t]
    return model.discriminator_loss(x, lengths, data.phones[t, :int(tl.max())], tl, rng)


def _step(net: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, cfg: GanTrainConfig) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_norm)
    opt.step()


def train_gan(model: Wav2VecU, data: GanData, cfg: GanTrainConfig, *,
              on_eval: Callable[[int, dict[str, float]], Any] | None = None,
              checkpoint: str | os.PathLike | None = None, data_key: str = "") -> list[Any]:
    """Train ``model`` for ``cfg.max_updates`` updates; every ``eval_every`` updates (and at the end) call
    ``on_eval(update, mean losses since the last call)`` and keep what it returns.

    With ``checkpoint``, the whole state (both networks, both optimisers, the batch and dropout generators,
    the history) is written there atomically after every evaluation, and a run that finds one continues from
    it, drawing the same batches as an uninterrupted run. A checkpoint of other settings (the model's, the
    training's, or ``data_key``, which names the data) is refused."""
    rng = torch.Generator().manual_seed(cfg.seed)
    opt_g = _adam(model.generator.parameters(), cfg.lr_generator, cfg, 0.0)
    opt_d = _adam(model.discriminator.parameters(), cfg.lr_discriminator, cfg, cfg.weight_decay_discriminator)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    history: list[Any] = []
    first = 1
    settings = {"model": dataclasses.asdict(model.cfg), "train": dataclasses.asdict(cfg), "data": data_key}
    if checkpoint is not None and Path(checkpoint).is_file():
        state = _read_state(Path(checkpoint))
        saved = _with_defaults(state.get("config") or {})
        if saved != settings:
            raise CheckpointError(f"{checkpoint}: written by a run with other settings "
                                  f"({_differences(saved, settings)}); delete it to start over")
        model.load_state_dict(state["model"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        rng.set_state(state["batches"])
        torch.set_rng_state(state["dropout"])
        history, first = state["history"], state["update"] + 1
    model.train()
    start = time.perf_counter()
    for update in range(first, cfg.max_updates + 1):
        model.set_num_updates(update - 1)                   # fairseq: the updates made before this one
        idx, x, lengths = _audio_batch(data, cfg, rng)
        if update % 2 == 1:                                  # fairseq discrim_step: odd updates
            losses = _discriminator_losses(model, data, cfg, rng, x, lengths)
            logged = {}
            net, opt = model.discriminator, opt_d
        else:
            units = data.units[idx, :x.size(1)] if data.units is not None else None
            losses, ppl = model.generator_loss(x, lengths, rng, units)
            logged = {"prob_ppl": float(ppl.detach())}
            net, opt = model.generator, opt_g
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"wav2vec-U: the loss is {float(loss)} at update {update}")
        _step(net, opt, loss, cfg)
        logged.update((k, float(v.detach())) for k, v in losses.items())
        for k, v in logged.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        if on_eval is not None and (update % cfg.eval_every == 0 or update == cfg.max_updates):
            means = {k: sums[k] / counts[k] for k in sums}
            means["seconds"] = time.perf_counter() - start
            point = on_eval(update, means)
            if point is not None:
                history.append(point)
            sums, counts = {}, {}
            if checkpoint is not None:
                save_checkpoint(checkpoint, {"config": settings, "update": update, "history": history,
                                             "model": model.state_dict(), "opt_g": opt_g.state_dict(),
                                             "opt_d": opt_d.state_dict(), "batches": rng.get_state(),
                                             "dropout": torch.get_rng_state()})
    return history


def probe_discriminator(model: Wav2VecU, data: GanData, cfg: GanTrainConfig, steps: int) -> float:
    """Train ``model``'s discriminator alone against its generator as it is (frozen) for ``steps`` steps of
    :func:`train_gan`'s discriminator (its batches, loss with the gradient penalty, Adam and clipping) and
    return its mean binary cross-entropy per sequence over the last quarter of the steps, generated and real
    sequences together, the penalty left out. ln 2 (0.693) is a discriminator that cannot tell the
    generator's output from text; the lower, the better it tells them apart."""
    rng = torch.Generator().manual_seed(cfg.seed)
    opt = _adam(model.discriminator.parameters(), cfg.lr_discriminator, cfg, cfg.weight_decay_discriminator)
    model.train()
    bce = []
    for _ in range(steps):
        idx, x, lengths = _audio_batch(data, cfg, rng)
        losses = _discriminator_losses(model, data, cfg, rng, x, lengths)
        _step(model.discriminator, opt, sum(losses.values()), cfg)
        sequences = len(idx) + min(cfg.batch_size, len(data.phones))
        bce.append(float(losses["dense_d"].detach() + losses["token_d"].detach()) / sequences)
    last = bce[-max(1, steps // 4):]
    return sum(last) / len(last)


def track(model: Wav2VecU, data: GanData, cfg: GanTrainConfig, lm: PhoneLM, dev_features: torch.Tensor,
          dev_lengths: torch.Tensor, references: Sequence[Sequence[str]] | None, *, inventory: Sequence[str] | None = None,
          on_eval: Callable[[dict], Any] | None = None, evaluate_first: bool = False, **kwargs: Any) -> list[dict]:
    """:func:`train_gan` with an evaluation on the dev features every ``cfg.eval_every`` updates: one dict per
    evaluation with the update, the mean losses, the selection metric (``lm_ppl``, ``usage``,
    ``weighted_lm_ppl``), the dev PER when ``references`` are given (``None`` otherwise; never used to
    choose), the seed and a copy of the generator's weights; with ``evaluate_first``, also one before the first
    update (update 0, no losses). ``kwargs`` go to :func:`train_gan`."""
    from .data.phones import PHONES

    inventory = PHONES if inventory is None else inventory

    def point(update: int, means: dict[str, float]) -> dict:
        sel, per, _ = evaluate(model, dev_features, dev_lengths, lm, inventory, references)
        out = {"update": update, **means, "lm_ppl": sel.lm_ppl, "usage": sel.usage,
               "weighted_lm_ppl": sel.weighted_lm_ppl, "dev_per": per, "seed": cfg.seed,
               "generator": {k: v.clone() for k, v in model.generator.state_dict().items()}}
        if on_eval is not None:
            on_eval(out)
        return out

    first = [point(0, {})] if evaluate_first else []
    return first + train_gan(model, data, cfg, on_eval=point, **kwargs)


def linear_ctc(features: torch.Tensor, lengths: torch.Tensor, targets: Sequence[Sequence[int]],
               eval_features: torch.Tensor, eval_lengths: torch.Tensor, *, num_phones: int, kernel: int = 4,
               updates: int = 1500, batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> list[list[int]]:
    """The supervised reference for the same inputs: the generator's architecture (one convolution of
    ``kernel``) with one more output for CTC's blank (output ``BLANK = 0``; phone ``i`` is output ``i + 1``),
    trained with CTC on the phone ids ``targets`` (silence left out) for ``updates`` Adam steps; returns the
    greedy CTC decoding of ``eval_features`` as phone ids.

    On segment features with ``kernel=4`` it is the ceiling of the GAN (the same generator, with labels); on a
    layer's frames with ``kernel=1`` it is the paper's criterion for the layer (Sec. 2.2, Fig. 2: a linear CTC
    phone probe on each block)."""
    from .data.transcripts import BLANK
    from .decoding import greedy_decode
    from .models.wav2vec_u import GanConfig, Generator

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = Generator(GanConfig(input_dim=features.size(-1), num_phones=num_phones + 1, generator_kernel=kernel))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    flat = [torch.as_tensor(t, dtype=torch.long) + 1 for t in targets]
    target_lengths = torch.tensor([len(t) for t in flat])
    net.train()
    for _ in range(updates):
        idx = torch.randint(len(features), (min(batch_size, len(features)),), generator=g)
        n = lengths[idx]
        logits, out = net(features[idx, :int(n.max())], n)
        loss = torch.nn.functional.ctc_loss(logits.log_softmax(-1).transpose(0, 1), torch.cat([flat[i] for i in idx]),
                                            out, target_lengths[idx], blank=BLANK, reduction="mean",
                                            zero_infinity=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        logits, out = net(eval_features[:, :int(eval_lengths.max())], eval_lengths)
    return [[i - 1 for i in h] for h in greedy_decode(logits.log_softmax(-1), out)]
