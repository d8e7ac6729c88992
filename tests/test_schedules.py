"""Learning-rate schedules against their closed forms, and inside LambdaLR."""

import math
from types import SimpleNamespace

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.schedules import (
    build_scheduler,
    cosine_lr,
    lr_at,
    polynomial_decay_lr,
    schedule_function,
    tri_stage_lr,
    tri_stage_steps,
)
from speechssl.engine import TrainConfig


def approx(x, rel=1e-12, abs=1e-18):
    return pytest.approx(x, rel=rel, abs=abs)


# wav2vec 2.0 BASE: peak 5e-4, 32k warm-up updates of 400k, linear decay to 0.
W2V2 = TrainConfig(model="m", schedule="polynomial", lr=5e-4, max_steps=400_000, warmup_fraction=0.08)


def test_wav2vec2_base_polynomial_values():
    assert W2V2.warmup == 32_000
    f = schedule_function(W2V2)
    assert f(0) == 0.0
    assert f(16_000) == approx(2.5e-4)
    assert f(32_000) == approx(5e-4)
    # halfway through the decay: (400k + 32k) / 2 = 216k
    assert f(216_000) == approx(2.5e-4)
    assert f(100_000) == approx(5e-4 * (1 - (100_000 - 32_000) / (400_000 - 32_000)))
    assert f(400_000) == 0.0
    assert f(500_000) == 0.0


def test_polynomial_end_lr_and_power():
    kw = dict(lr=1.0, total_steps=110, warmup_steps=10)
    assert polynomial_decay_lr(60, end_lr=0.1, **kw) == approx(0.1 + 0.9 * 0.5)
    assert polynomial_decay_lr(60, end_lr=0.0, power=2.0, **kw) == approx(0.25)
    assert polynomial_decay_lr(5, **kw) == approx(0.5)
    # without warm-up the first update runs at the peak
    assert polynomial_decay_lr(0, lr=1.0, total_steps=10) == 1.0


def test_wav2vec_cosine_values():
    # wav2vec: 500 warm-up updates from 1e-7 to 5e-3, cosine to 1e-6 over 400k updates.
    cfg = TrainConfig(model="m", schedule="cosine", lr=5e-3, max_steps=400_000, warmup_steps=500,
                      warmup_init_lr=1e-7, min_lr=1e-6)
    f = schedule_function(cfg)
    assert f(0) == approx(1e-7)
    assert f(250) == approx(1e-7 + 250 * (5e-3 - 1e-7) / 500)
    assert f(500) == approx(5e-3)
    mid = 500 + (400_000 - 500) // 2
    assert f(mid) == approx(1e-6 + 0.5 * (5e-3 - 1e-6) * (1 + math.cos(math.pi * (mid - 500) / 399_500)))
    assert f(mid) == approx((5e-3 + 1e-6) / 2, rel=1e-9)
    quarter = 500 + 399_500 // 4
    assert f(quarter) == approx(1e-6 + 0.5 * (5e-3 - 1e-6) * (1 + math.cos(math.pi / 4)), rel=1e-9)
    assert f(400_000) == approx(1e-6)
    assert f(450_000) == approx(1e-6)


def test_cosine_warmup_starts_at_min_lr_by_default():
    assert cosine_lr(0, lr=1.0, total_steps=100, warmup_steps=10, min_lr=0.1) == approx(0.1)
    assert cosine_lr(5, lr=1.0, total_steps=100, warmup_steps=10, min_lr=0.1) == approx(0.55)


def test_tri_stage_values():
    lr, total = 3e-5, 20_000
    cfg = TrainConfig(model="m", schedule="tri_stage", lr=lr, max_steps=total)
    assert tri_stage_steps(total, cfg.tri_stage_ratios) == (2_000, 8_000, 10_000)
    f = schedule_function(cfg)
    assert f(0) == approx(0.01 * lr)
    assert f(1_000) == approx(0.01 * lr + 1_000 * (lr - 0.01 * lr) / 2_000)
    assert f(2_000) == approx(lr)
    assert f(9_999) == approx(lr)
    assert f(10_000) == approx(lr)  # first decay step: exp(0)
    # decay: lr * exp(-k t), k = -ln(0.05) / 10k, so halfway gives lr * sqrt(0.05)
    assert f(15_000) == approx(lr * math.sqrt(0.05), rel=1e-12)
    assert f(12_345) == approx(lr * math.exp(math.log(0.05) / 10_000 * 2_345), rel=1e-12)
    assert f(20_000) == approx(0.05 * lr)
    assert f(30_000) == approx(0.05 * lr)


def test_tri_stage_custom_scales():
    kw = dict(lr=1.0, total_steps=100, ratios=(0.2, 0.3, 0.5), init_lr_scale=0.1, final_lr_scale=0.01)
    assert tri_stage_lr(0, **kw) == approx(0.1)
    assert tri_stage_lr(10, **kw) == approx(0.55)
    assert tri_stage_lr(75, **kw) == approx(0.1)  # sqrt(0.01)
    assert tri_stage_lr(100, **kw) == approx(0.01)


def test_constant():
    cfg = TrainConfig(model="m", schedule="constant", lr=2e-4, max_steps=10)
    assert lr_at(cfg, range(12)) == [2e-4] * 12


@pytest.mark.parametrize("schedule", ["cosine", "polynomial", "tri_stage", "constant"])
def test_lambda_lr_follows_closed_form(schedule):
    cfg = TrainConfig(model="m", schedule=schedule, lr=1e-3, max_steps=50, warmup_steps=5, min_lr=1e-5)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    expected = lr_at(cfg, range(60))
    seen = []
    for _ in range(60):
        seen.append(opt.param_groups[0]["lr"])  # the rate this update runs at
        opt.step()
        sched.step()
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-20)


def test_scheduler_state_round_trip():
    cfg = TrainConfig(model="m", schedule="tri_stage", lr=1e-3, max_steps=40)

    def make():
        p = torch.nn.Parameter(torch.zeros(2))
        opt = torch.optim.SGD([p], lr=cfg.lr)
        return opt, build_scheduler(opt, cfg)

    opt, sched = make()
    for _ in range(17):
        opt.step()
        sched.step()
    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(10):
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()


def test_schedule_errors():
    base = dict(lr=1e-3, max_steps=10, warmup_steps=None, warmup_fraction=0.1, min_lr=0.0,
                warmup_init_lr=None, tri_stage_ratios=(0.1, 0.4, 0.5), init_lr_scale=0.01,
                final_lr_scale=0.05)
    with pytest.raises(ConfigError, match="schedule: expected one of"):
        schedule_function(SimpleNamespace(schedule="linear", **base))
    with pytest.raises(ConfigError, match="warmup_steps: expected at most max_steps=10, found 20"):
        schedule_function(SimpleNamespace(schedule="cosine", **{**base, "warmup_steps": 20}))
    with pytest.raises(ConfigError, match="lr: expected a finite number > 0"):
        schedule_function(SimpleNamespace(schedule="constant", **{**base, "lr": 0.0}))
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ConfigError, match="param group 0 has lr=0.1, expected config.lr=0.001"):
        build_scheduler(torch.optim.SGD([p], lr=0.1), SimpleNamespace(schedule="constant", **base))
