"""Gumbel-softmax and k-means quantizers: one-hot forward, straight-through gradients, schedule, groups."""

import math

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.metrics import codebook_perplexity
from speechssl.nn.quantizers import (GumbelQuantizer, KMeansQuantizer, codes_to_ids, ids_to_codes,
                                     linear_temperature)


def chosen_entries(q, codes):
    """Concatenate, per frame, the entry each group picked: the expected quantized vector."""
    entries = q.entries()  # (G, V, d)
    parts = [entries[g][codes[..., g]] for g in range(q.groups)]
    return torch.cat(parts, dim=-1)


@pytest.mark.parametrize("combine", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_gumbel_forward_is_one_hot_and_gradients_go_straight_through(groups, combine):
    torch.manual_seed(0)
    q = GumbelQuantizer(16, num_vars=7, groups=groups, combine_groups=combine, proj_depth=2, anneal_updates=100)
    q.train()
    x = torch.randn(2, 5, 16, requires_grad=True)
    out = q(x, torch.tensor([5, 3]), num_updates=10)
    assert out.x.shape == (2, 5, 16) and out.codes.shape == (2, 5, groups)
    valid = out.codes[0]
    torch.testing.assert_close(out.x[0], chosen_entries(q, valid))       # hard one-hot selection
    assert torch.all(out.codes[1, 3:] == -1) and torch.all(out.x[1, 3:] == 0)
    (out.x * torch.randn_like(out.x)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0                 # through the soft Gumbel-softmax
    assert q.codebook.grad.abs().sum() > 0
    assert all(p.grad is not None for p in q.logits_proj.parameters())


def test_gumbel_codebook_sizes_groups_and_combine():
    assert GumbelQuantizer(512, 320, 2, combine_groups=False).codebook.shape == (640, 256)
    assert GumbelQuantizer(512, 320, 2, combine_groups=True).codebook.shape == (320, 256)
    assert GumbelQuantizer(512, 320, 1).codebook.shape == (320, 512)
    q = GumbelQuantizer(8, 5, 2, code_dim=12)
    assert q(torch.randn(1, 3, 8)).x.shape == (1, 3, 12)


def test_temperature_schedule():
    q = GumbelQuantizer(8, 4, 2, max_temp=2.0, min_temp=0.5, anneal_updates=700)  # 70% of 1000 updates
    assert q.temperature(0) == 2.0
    assert q.temperature(350) == pytest.approx(1.25)
    assert q.temperature(700) == pytest.approx(0.5)
    assert q.temperature(1000) == pytest.approx(0.5)
    assert linear_temperature(280_000, 2.0, 0.5, 280_000) == pytest.approx(0.5)
    out = q(torch.randn(1, 4, 8), num_updates=350)
    assert out.temperature == pytest.approx(1.25)


def test_gumbel_eval_is_deterministic_argmax():
    torch.manual_seed(0)
    q = GumbelQuantizer(8, 6, 2).eval()
    x = torch.randn(2, 10, 8)
    a, b = q(x), q(x)
    assert torch.equal(a.codes, b.codes)
    logits = q.logits_proj(x).view(2, 10, 2, 6)
    assert torch.equal(a.codes, logits.argmax(-1))
    q.train()
    assert torch.equal(q(x, deterministic=True).codes, a.codes)


def test_perplexities_use_codebook_perplexity_and_valid_frames():
    torch.manual_seed(0)
    q = GumbelQuantizer(8, 6, 2).eval()
    x = torch.randn(2, 10, 8)
    lengths = torch.tensor([10, 4])
    out = q(x, lengths)
    valid = torch.arange(10)[None] < lengths[:, None]
    probs = q.logits_proj(x).view(2, 10, 2, 6).softmax(-1)[valid]
    assert float(out.prob_perplexity.detach()) == pytest.approx(float(codebook_perplexity(probs.detach()).sum()), rel=1e-5)
    one_hot = torch.nn.functional.one_hot(out.codes[valid], 6)
    assert float(out.code_perplexity) == pytest.approx(float(codebook_perplexity(one_hot).sum()), rel=1e-5)
    assert 2.0 <= float(out.code_perplexity) <= 12.0


def test_kmeans_picks_the_nearest_codeword_and_its_loss():
    torch.manual_seed(0)
    q = KMeansQuantizer(8, num_vars=5, groups=2, project=False, gamma=0.25)
    with torch.no_grad():
        q.codebook.normal_()
    x = torch.randn(2, 6, 8, requires_grad=True)
    out = q(x)
    zg = x.detach().view(2, 6, 2, 4)
    for g in range(2):
        d = ((zg[:, :, g, None, :] - q.codebook[g][None, None]) ** 2).sum(-1)  # (B, T, V)
        assert torch.equal(out.codes[..., g], d.argmin(-1))
    zq = chosen_entries(q, out.codes)
    torch.testing.assert_close(out.x, zq)                                       # forward: the codeword
    mse = ((zq - x.detach()) ** 2).mean()
    assert float(out.loss.detach()) == pytest.approx(float(mse.detach() * 1.25), rel=1e-5)        # latent + gamma * commitment


def test_kmeans_straight_through_and_codebook_gradients():
    torch.manual_seed(0)
    q = KMeansQuantizer(8, num_vars=5, groups=2, project=False)
    x = torch.randn(1, 4, 8, requires_grad=True)
    out = q(x)
    r = torch.randn_like(out.x)
    (out.x * r).sum().backward(retain_graph=True)
    torch.testing.assert_close(x.grad, r)            # dL/dz = dL/dz^ (straight-through)
    assert q.codebook.grad is None                   # the task loss does not move the codewords ...
    x.grad = None
    out.loss.backward()
    assert q.codebook.grad.abs().sum() > 0           # ... the VQ loss does
    # commitment term: gamma * d/dz mean((z - sg(zq))^2)
    zq = chosen_entries(q, out.codes).detach()
    torch.testing.assert_close(x.grad, 0.25 * 2 * (x.detach() - zq) / x.numel())


def test_kmeans_groups_projection_and_padding():
    q = KMeansQuantizer(16, num_vars=9, groups=2, combine_groups=True)
    assert q.codebook.shape == (1, 9, 8) and q.entries().shape == (2, 9, 8)
    out = q(torch.randn(2, 7, 16), torch.tensor([7, 2]))
    assert out.codes.shape == (2, 7, 2) and torch.all(out.codes[1, 2:] == -1)
    assert torch.all(out.x[1, 2:] == 0)
    assert KMeansQuantizer(16, 9, 1).codebook.shape == (1, 9, 16)


def test_collapsed_codes_have_perplexity_one_per_group():
    q = KMeansQuantizer(4, num_vars=3, groups=2, project=False)
    with torch.no_grad():
        q.codebook.zero_()
        q.codebook[:, 0] = 1.0
    out = q(torch.ones(1, 10, 4))
    assert torch.all(out.codes == 0)
    assert float(out.code_perplexity) == pytest.approx(2.0)  # 1 per group, summed over 2 groups


def test_codes_to_ids_round_trip():
    codes = torch.tensor([[0, 0], [0, 319], [1, 0], [319, 319], [-1, -1]])
    ids = codes_to_ids(codes, 320)
    assert ids.tolist() == [0, 319, 320, 320 * 320 - 1, -1]
    assert torch.equal(ids_to_codes(ids[:4], 320, 2), codes[:4])
    three = torch.tensor([[1, 2, 3]])
    assert codes_to_ids(three, 10).tolist() == [123]


@pytest.mark.parametrize("kwargs, field", [
    ({"num_vars": 1}, "num_vars"),
    ({"groups": 0}, "groups"),
    ({"groups": 3}, "code_dim"),
    ({"proj_depth": 0}, "proj_depth"),
    ({"max_temp": 0.1, "min_temp": 0.5}, "max_temp"),
    ({"temp_decay": 1.5}, "temp_decay"),
    ({"temp_decay": 0.0}, "temp_decay"),
])
def test_gumbel_config_errors(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        GumbelQuantizer(16, **{"num_vars": 4, **kwargs})


def test_kmeans_config_errors():
    with pytest.raises(ConfigError, match="num_vars"):
        KMeansQuantizer(16, num_vars=1)
    with pytest.raises(ConfigError, match="gamma"):
        KMeansQuantizer(16, num_vars=4, gamma=-1)
    with pytest.raises(ConfigError, match="code_dim"):
        KMeansQuantizer(10, num_vars=4, groups=3)
    assert math.isclose(KMeansQuantizer(16, 4).gamma, 0.25)


@pytest.mark.parametrize("quantizer", ["gumbel", "kmeans"])
def test_gradients_are_bitwise_repeatable_on_the_cpu(quantizer):
    # Exact resume and the chapters' stored outputs need identical runs to give identical numbers;
    # a scatter-add of the codebook gradient with atomics broke that for k-means.
    torch.manual_seed(0)
    q = (KMeansQuantizer(96, 64, 2, combine_groups=True) if quantizer == "kmeans"
         else GumbelQuantizer(96, 64, 2, combine_groups=True, proj_depth=1))
    x = torch.randn(8, 200, 96)
    grads = []
    for _ in range(3):
        q.zero_grad()
        out = q(x, torch.full((8,), 200), deterministic=True)
        (out.x.pow(2).sum() + out.loss).backward()
        grads.append(q.codebook.grad.clone())
    assert all(torch.equal(grads[0], g) for g in grads[1:])
