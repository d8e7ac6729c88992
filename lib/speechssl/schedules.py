"""Learning-rate schedules of the wav2vec family, as closed-form functions of the update number.

Every schedule here is a function ``lr(step)`` of the number of optimizer updates done so
far, with fairseq's semantics (so that the papers' hyper-parameters can be used unchanged):
the update with index ``step`` (0-based) runs at ``lr(step)``. :func:`build_scheduler`
wraps one in :class:`torch.optim.lr_scheduler.LambdaLR`, whose ``last_epoch`` counts
optimizer updates when ``scheduler.step()`` is called once after each ``optimizer.step()``.

=============== ================================================ ============================
name            used by                                          source
=============== ================================================ ============================
``cosine``      wav2vec, vq-wav2vec pre-training                 Schneider et al. (2019),
                                                                 Sec. 3.3; Loshchilov &
                                                                 Hutter (2017); fairseq
                                                                 ``cosine``
``polynomial``  wav2vec 2.0 and HuBERT pre-training              Baevski et al. (2020),
                                                                 Sec. 4.2; Hsu et al. (2021),
                                                                 Sec. IV; fairseq
                                                                 ``polynomial_decay``
``tri_stage``   wav2vec 2.0 / HuBERT fine-tuning                 Baevski et al. (2020),
                                                                 Sec. 4.3; Park et al.
                                                                 (2019); fairseq
                                                                 ``tri_stage``
``constant``    wav2vec-U GAN training, debugging                (no decay)
=============== ================================================ ============================

The published settings, for reference (all with Adam):

- wav2vec: 400k updates, warm-up over 500 updates from 1e-7 to 5e-3, then a cosine down
  to 1e-6 (fairseq ``examples/wav2vec``: ``--warmup-init-lr 1e-07 --max-lr 0.005``).
- wav2vec 2.0 BASE: peak 5e-4, linear warm-up over the first 32k of 400k updates (8%),
  then linear decay to 0; LARGE: 3e-4, 32k of 600k.
- HuBERT BASE: peak 5e-4, warm-up over the first 8% of updates, then linear decay to 0.
- fine-tuning: warm-up 10% from ``0.01 * lr``, hold 40%, exponential decay over the
  last 50% down to ``0.05 * lr``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .errors import ConfigError

__all__ = [
    "SCHEDULES",
    "build_scheduler",
    "constant_lr",
    "cosine_lr",
    "lr_at",
    "polynomial_decay_lr",
    "resolve_warmup_steps",
    "schedule_function",
    "tri_stage_lr",
    "tri_stage_steps",
]

#: Names accepted by :func:`build_scheduler` (``TrainConfig.schedule``).
SCHEDULES = ("cosine", "polynomial", "tri_stage", "constant")


def _check_steps(name: str, value: int, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, found {value!r}")


def constant_lr(step: int, *, lr: float) -> float:
    """The same learning rate at every update."""
    return lr


def cosine_lr(
    step: int,
    *,
    lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    warmup_init_lr: float | None = None,
) -> float:
    """Linear warm-up, then half a cosine from ``lr`` down to ``min_lr``.

    fairseq's ``cosine`` scheduler with one period (``t_mult=1``, ``lr_period_updates``
    left to its default ``max_update - warmup_updates``), as used for wav2vec
    (Schneider et al., 2019, Sec. 3.3; SGDR without restarts, Loshchilov & Hutter, 2017)::

        step <  W:  warmup_init_lr + step * (lr - warmup_init_lr) / W
        step >= W:  min_lr + (lr - min_lr) * (1 + cos(pi * (step - W) / (T - W))) / 2

    with ``W = warmup_steps`` and ``T = total_steps``. ``warmup_init_lr`` defaults to
    ``min_lr`` (as in fairseq). After ``T`` updates the rate stays at ``min_lr`` (fairseq
    would start a new period; a run never gets there because it stops at ``max_update``).
    """
    if warmup_init_lr is None:
        warmup_init_lr = min_lr
    if step < warmup_steps:
        return warmup_init_lr + step * (lr - warmup_init_lr) / warmup_steps
    period = total_steps - warmup_steps
    if period <= 0 or step >= total_steps:
        return min_lr if period > 0 else lr
    t = (step - warmup_steps) / period
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t))


def polynomial_decay_lr(
    step: int,
    *,
    lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    end_lr: float = 0.0,
    power: float = 1.0,
) -> float:
    """Linear warm-up from 0, then polynomial decay to ``end_lr`` (linear for ``power=1``).

    fairseq's ``polynomial_decay`` scheduler, used with ``power=1`` and
    ``end_learning_rate=0`` for wav2vec 2.0 (Baevski et al., 2020, Sec. 4.2: warm-up over
    the first 8% of updates, then linear decay) and HuBERT (Hsu et al., 2021)::

        step <= W:  lr * step / W
        W < step < T:  end_lr + (lr - end_lr) * (1 - (step - W) / (T - W)) ** power
        step >= T:  end_lr

    The first update (``step=0``) runs at rate 0 when there is a warm-up, as in fairseq.
    """
    if warmup_steps > 0 and step <= warmup_steps:
        return lr * step / warmup_steps
    if step >= total_steps:
        return end_lr
    remaining = 1.0 - (step - warmup_steps) / (total_steps - warmup_steps)
    return end_lr + (lr - end_lr) * remaining**power


def tri_stage_steps(total_steps: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """``(warmup, hold, decay)`` update counts: ``int(total_steps * ratio)`` each (fairseq)."""
    return tuple(int(total_steps * r) for r in ratios)  # type: ignore[return-value]


def tri_stage_lr(
    step: int,
    *,
    lr: float,
    total_steps: int,
    ratios: tuple[float, float, float] = (0.1, 0.4, 0.5),
    init_lr_scale: float = 0.01,
    final_lr_scale: float = 0.05,
) -> float:
    """Warm-up, hold, exponential decay: the fine-tuning schedule of wav2vec 2.0.

    fairseq's ``tri_stage`` scheduler (from SpecAugment, Park et al., 2019), with the
    stage lengths given as fractions of ``total_steps`` as in the wav2vec 2.0 fine-tuning
    recipes (Baevski et al., 2020, Sec. 4.3 and App. B: 10% / 40% / 50%; the paper says
    "decayed", fairseq's implementation, used for the paper, decays exponentially)::

        warm-up (W updates):  init + step * (lr - init) / W,       init = init_lr_scale * lr
        hold    (H updates):  lr
        decay   (D updates):  lr * exp(-k * (step - W - H)),        k = -ln(final_lr_scale) / D
        after:                final_lr_scale * lr

    so the rate reaches ``final_lr_scale * lr`` exactly at the end of the decay stage.
    fairseq's defaults are ``init_lr_scale=0.01``; the wav2vec 2.0 recipes set
    ``final_lr_scale=0.05``.
    """
    warmup, hold, decay = tri_stage_steps(total_steps, ratios)
    if step < warmup:
        init = init_lr_scale * lr
        return init + step * (lr - init) / warmup
    step -= warmup
    if step < hold:
        return lr
    step -= hold
    if step <= decay and decay > 0:
        return lr * math.exp(math.log(final_lr_scale) * step / decay)
    return final_lr_scale * lr


def resolve_warmup_steps(config: Any) -> int:
    """Warm-up length in updates: ``config.warmup_steps`` when set, else a fraction of the run.

    ``round(config.warmup_fraction * config.max_steps)``; e.g. 8% of 400k = 32k (wav2vec 2.0
    BASE). The tri-stage schedule has its own warm-up (``tri_stage_ratios[0]``).
    """
    steps = getattr(config, "warmup_steps", None)
    if steps is not None:
        return int(steps)
    return int(round(float(getattr(config, "warmup_fraction", 0.0)) * int(config.max_steps)))


def schedule_function(config: Any) -> Callable[[int], float]:
    """``step -> learning rate`` for a configuration (a :class:`~speechssl.engine.TrainConfig`
    or any object with the same attributes).

    Attributes read: ``schedule``, ``lr``, ``max_steps`` and, depending on the schedule,
    ``warmup_steps`` / ``warmup_fraction``, ``warmup_init_lr``, ``min_lr``,
    ``tri_stage_ratios``, ``init_lr_scale``, ``final_lr_scale``.

    Raises:
        ConfigError: an unknown schedule name or inconsistent values.
    """
    name = config.schedule
    lr = float(config.lr)
    total = config.max_steps
    _check_steps("max_steps", total, 1)
    if not lr > 0 or not math.isfinite(lr):
        raise ConfigError(f"lr: expected a finite number > 0, found {config.lr!r}")
    if name == "constant":
        return lambda step: constant_lr(step, lr=lr)
    if name == "tri_stage":
        ratios = tuple(float(r) for r in config.tri_stage_ratios)
        init_scale = float(config.init_lr_scale)
        final_scale = float(config.final_lr_scale)
        return lambda step: tri_stage_lr(
            step, lr=lr, total_steps=total, ratios=ratios,  # type: ignore[arg-type]
            init_lr_scale=init_scale, final_lr_scale=final_scale,
        )
    warmup = resolve_warmup_steps(config)
    _check_steps("warmup_steps", warmup)
    if warmup > total:
        raise ConfigError(f"warmup_steps: expected at most max_steps={total}, found {warmup}")
    if name == "cosine":
        min_lr = float(config.min_lr)
        init = getattr(config, "warmup_init_lr", None)
        init = None if init is None else float(init)
        return lambda step: cosine_lr(
            step, lr=lr, total_steps=total, warmup_steps=warmup, min_lr=min_lr, warmup_init_lr=init
        )
    if name == "polynomial":
        end_lr = float(config.min_lr)
        return lambda step: polynomial_decay_lr(
            step, lr=lr, total_steps=total, warmup_steps=warmup, end_lr=end_lr
        )
    raise ConfigError(f"schedule: expected one of {SCHEDULES}, found {name!r}")


def lr_at(config: Any, steps: int | range | list[int]) -> float | list[float]:
    """Learning rate(s) of ``config``'s schedule at update ``steps`` (for plots and tables)."""
    fn = schedule_function(config)
    if isinstance(steps, int):
        return fn(steps)
    return [fn(s) for s in steps]


def build_scheduler(optimizer: Optimizer, config: Any) -> LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` following ``config``'s schedule.

    The optimizer's learning rate must be ``config.lr`` (the peak rate): ``LambdaLR``
    multiplies it by ``lr(step) / config.lr``. Call ``scheduler.step()`` once after every
    ``optimizer.step()``; the state (``last_epoch`` = updates done) is saved in
    checkpoints, the function itself is rebuilt from the configuration on resume.
    """
    fn = schedule_function(config)
    peak = float(config.lr)
    for i, group in enumerate(optimizer.param_groups):
        base = group.get("initial_lr", group["lr"])
        if not math.isclose(base, peak, rel_tol=1e-12):
            raise ConfigError(
                f"optimizer param group {i} has lr={base}, expected config.lr={peak} (the "
                f"schedule scales the peak learning rate)"
            )

    def factor(step: int) -> float:
        return fn(step) / peak

    return LambdaLR(optimizer, factor)
