"""Recipes: one per (model, scale); overrides first, schedules derived from the final number of updates."""

import dataclasses

import pytest

from speechssl.errors import ConfigError
from speechssl.nn.quantizers import exponential_temperature, linear_temperature
from speechssl.recipes import CORPUS, RECIPES, W2V2_ANNEAL_FRACTION, recipe

BUILD_KWARGS = {"unit_bert": {}, "wav2vec2_ctc_scratch": {"vocab": ["A", "B"]}}
EXTRA = {"unit_bert": {"vocab_size": 50}}


def first_update_at_floor(temperature, steps: int, floor: float) -> int:
    return next(n for n in range(steps + 1) if temperature(n) <= floor + 1e-12)


@pytest.mark.parametrize("steps", [60, 600, 2000])
def test_wav2vec2_temperature_reaches_its_floor_at_the_papers_share_of_the_run(steps):
    r = recipe("wav2vec2", "tiny", max_steps=steps)
    q = r.build().quantizer
    at = first_update_at_floor(q.temperature, steps, r.model.min_temp)
    assert abs(at - W2V2_ANNEAL_FRACTION * steps) <= 1
    assert 0.69 < W2V2_ANNEAL_FRACTION < 0.70           # 0.999995 per update reaches 0.5 at 277k of 400k (Sec. 4.2)
    assert q.temperature(at - 2) > r.model.min_temp      # not before
    cfg = r.model
    assert exponential_temperature(at, cfg.max_temp, cfg.min_temp, cfg.temp_decay) == cfg.min_temp


@pytest.mark.parametrize("steps", [60, 600, 2000])
@pytest.mark.parametrize("name", ["vq_wav2vec", "vq_wav2vec_kmeans"])
def test_vq_wav2vec_temperature_reaches_its_floor_at_70_percent(name, steps):
    r = recipe(name, "tiny", max_steps=steps)
    cfg = r.model
    at = first_update_at_floor(lambda n: linear_temperature(n, cfg.max_temp, cfg.min_temp, cfg.anneal_updates), steps,
                               cfg.min_temp)
    assert at == round(0.7 * steps)                       # vq-wav2vec Sec. 5.2
    if name == "vq_wav2vec":
        assert r.build().quantizer.temperature(at) == cfg.min_temp


def test_full_scale_keeps_the_papers_constants():
    assert recipe("wav2vec2", "full").model.temp_decay == pytest.approx(0.999995, abs=1e-12)
    assert recipe("vq_wav2vec", "full").model.anneal_updates == 280_000
    assert recipe("wav2vec", "full").train.warmup_steps == 500
    assert recipe("wav2vec2_ctc_finetune", "full").model.freeze_updates == 10_000
    assert recipe("unit_bert", "full", vocab_size=9).train.warmup_steps == 10_000


def test_an_overridden_schedule_length_is_kept():
    assert recipe("wav2vec2", "tiny", max_steps=60, temp_decay=0.99).model.temp_decay == 0.99
    assert recipe("vq_wav2vec", "tiny", max_steps=60, anneal_updates=7).model.anneal_updates == 7
    assert recipe("wav2vec", "tiny", max_steps=60, warmup_steps=3).train.warmup_steps == 3


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value * 2
    if isinstance(value, float):
        return value * 0.5 if value else 0.01
    return None


@pytest.mark.parametrize("name", ["wav2vec", "vq_wav2vec", "wav2vec2", "hubert", "unit_bert", "wav2vec2_ctc_scratch"])
def test_an_override_of_any_field_is_in_the_built_model(name):
    base = recipe(name, "tiny", **EXTRA.get(name, {}))
    tried = applied = 0
    for f in dataclasses.fields(base.model):
        new = changed(getattr(base.model, f.name))
        if new is None:
            continue
        tried += 1
        try:
            r = recipe(name, "tiny", **{**EXTRA.get(name, {}), f.name: new})
        except ConfigError:
            continue                                       # not a valid value for this field: refused, clearly
        assert getattr(r.model, f.name) == new, f.name
        model = r.build(**BUILD_KWARGS.get(name, {}))
        assert getattr(model.cfg, f.name) == new, f.name
        applied += 1
    assert applied >= 0.7 * tried, (applied, tried)
    for field, value in (("lr", 0.123), ("max_batch_samples", 512_345), ("seed", 7), ("grad_clip", 3.0)):
        assert getattr(recipe(name, "tiny", **{**EXTRA.get(name, {}), field: value}).train, field) == value


def test_every_recipe_exists_at_every_scale_and_reads_its_corpus():
    for name in RECIPES:
        for scale in CORPUS:
            r = recipe(name, scale, **EXTRA.get(name, {}))
            assert (r.name, r.scale, r.train.model, r.train.scale, r.corpus) == (name, scale, name, scale, CORPUS[scale])


def test_bad_overrides_are_named():
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['learning_rate'\]"):
        recipe("wav2vec2", "tiny", learning_rate=1.0)
    with pytest.raises(ConfigError, match="model: expected one of"):
        recipe("wav2vec3", "tiny")
    with pytest.raises(ConfigError, match="scale: expected one of"):
        recipe("wav2vec2", "huge")
    with pytest.raises(ConfigError, match="TrainConfig.lr"):
        recipe("wav2vec2", "tiny", lr=-1.0)
    with pytest.raises(ConfigError, match="mask_prob"):
        recipe("wav2vec2", "tiny", mask_prob=12.0)
