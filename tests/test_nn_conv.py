"""Convolutional encoder and context network: lengths, normalisation over valid frames, causality."""

import pytest
import torch
from torch import nn

from speechssl.errors import ConfigError
from speechssl.frames import WAV2VEC2_ENCODER, receptive_field, total_stride
from speechssl.nn.conv import ConvBlock, ConvContextNetwork, ConvFeatureEncoder, MaskedGroupNorm, conv_output_lengths

W2V_ENCODER = [(16, 10, 5), (16, 8, 4), (16, 4, 2), (16, 4, 2), (16, 4, 2)]


def test_receptive_field_and_hop_of_the_wav2vec_encoder():
    layers = [(k, s) for _, k, s in W2V_ENCODER]
    assert receptive_field(layers) == 465          # about 30 ms at 16 kHz (wav2vec Sec. 2.1)
    assert total_stride(layers) == 160             # 10 ms
    w2v2 = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
    assert receptive_field(w2v2) == receptive_field(WAV2VEC2_ENCODER) == 400
    enc = ConvFeatureEncoder(W2V_ENCODER)
    assert enc.receptive_field == 465 and enc.hop == 160


@pytest.mark.parametrize("n", [464, 465, 466, 624, 625, 1000, 16000])
def test_output_lengths_match_the_convolutions(n):
    enc = ConvFeatureEncoder(W2V_ENCODER)
    lengths = torch.tensor([n])
    expected = int(conv_output_lengths(lengths, enc.kernel_strides)[0])
    assert expected == max(0, 1 + (n - 465) // 160)
    if expected > 0:
        z, out_len = enc(torch.randn(1, n), lengths)
        assert z.shape == (1, 16, expected) and int(out_len[0]) == expected


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_masked_group_norm_equals_group_norm_without_padding(groups):
    x = torch.randn(3, 16, 20)
    ref = nn.GroupNorm(groups, 16)
    mine = MaskedGroupNorm(groups, 16)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5); ref.bias.uniform_(-1, 1)
        mine.weight.copy_(ref.weight); mine.bias.copy_(ref.bias)
    torch.testing.assert_close(mine(x), ref(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine(x, torch.tensor([20, 20, 20])), ref(x), atol=1e-5, rtol=1e-5)


def test_masked_group_norm_uses_only_valid_frames():
    norm = MaskedGroupNorm(1, 8)
    x = torch.randn(2, 8, 12)
    x_short = x[1:, :, :7]
    padded = x.clone()
    padded[1, :, 7:] = 1e3  # garbage in the padding must not matter
    y = norm(padded, torch.tensor([12, 7]))
    torch.testing.assert_close(y[1:, :, :7], norm(x_short), atol=1e-5, rtol=1e-5)
    assert torch.all(y[1, :, 7:] == 0)


def test_encoder_output_does_not_depend_on_padding():
    torch.manual_seed(0)
    enc = ConvFeatureEncoder(W2V_ENCODER, log_compression=True)
    a, b = torch.randn(4000), torch.randn(2500)
    batch = torch.zeros(2, 4000)
    batch[0], batch[1, :2500] = a, b
    z, lengths = enc(batch, torch.tensor([4000, 2500]))
    z_b, len_b = enc(b[None], torch.tensor([2500]))
    assert lengths.tolist() == [1 + (4000 - 465) // 160, 1 + (2500 - 465) // 160]
    torch.testing.assert_close(z[1:, :, : int(len_b)], z_b, atol=1e-5, rtol=1e-4)
    assert torch.all(z[1, :, int(len_b):] == 0)


@pytest.mark.parametrize("norm", ["layer", "none"])
@pytest.mark.parametrize("skip", [False, True])
def test_context_network_is_causal(norm, skip):
    """c_i must not depend on z_j for j > i; and z_j reaches c_i only for i - j < receptive field."""
    torch.manual_seed(0)
    net = ConvContextNetwork(8, [(8, 3)] * 4 + [(12, 2)], norm=norm, skip_connections=skip)
    assert net.receptive_field == 1 + 4 * 2 + 1
    z = torch.randn(2, 8, 30, requires_grad=True)
    c, _ = net(z)
    i = 14
    (grad,) = torch.autograd.grad(c[:, :, i].sum(), z)
    influence = grad.abs().sum(dim=(0, 1))        # (T,)
    assert torch.all(influence[i + 1:] == 0)      # nothing from the future
    assert torch.all(influence[: i - net.receptive_field + 1] == 0)  # nothing beyond the receptive field
    assert influence[i] > 0 and influence[i - net.receptive_field + 1] > 0
    # the same statement by perturbation: changing the future leaves the past unchanged
    z2 = z.detach().clone()
    z2[:, :, i + 1:] += torch.randn_like(z2[:, :, i + 1:])
    c2, _ = net(z2)
    torch.testing.assert_close(c2[:, :, : i + 1], c.detach()[:, :, : i + 1])


def test_group_norm_context_convolutions_are_causal_but_statistics_are_per_utterance():
    """With the paper's single-group norm the convolutions are causal, but mean and variance are
    taken over the utterance: a future change reaches c_i only through those statistics."""
    torch.manual_seed(0)
    net = ConvContextNetwork(8, [(8, 3)] * 3, norm="group")
    z = torch.randn(1, 8, 20)
    z2 = z.clone()
    z2[:, :, 15:] += 5.0
    c, _ = net(z)
    c2, _ = net(z2)
    assert not torch.allclose(c[:, :, :10], c2[:, :, :10])  # statistics changed
    # ... and with the statistics of frames 0..i only (a per-prefix utterance), c_i is the same
    c_prefix, _ = net(z[:, :, :15])
    c2_prefix, _ = net(z2[:, :, :15])
    torch.testing.assert_close(c_prefix, c2_prefix)


def test_context_network_lengths_and_padding():
    net = ConvContextNetwork(8, [(8, 3)] * 2, norm="group")
    z = torch.randn(2, 8, 10)
    c, lengths = net(z, torch.tensor([10, 6]))
    assert c.shape == (2, 8, 10) and lengths.tolist() == [10, 6]
    assert torch.all(c[1, :, 6:] == 0)
    alone, _ = net(z[1:, :, :6], torch.tensor([6]))
    torch.testing.assert_close(c[1:, :, :6], alone, atol=1e-5, rtol=1e-5)


def test_skip_connections_project_when_the_width_changes():
    net = ConvContextNetwork(8, [(8, 2), (16, 3)], skip_connections=True)
    assert isinstance(net.residual_proj[0], nn.Identity)
    assert isinstance(net.residual_proj[1], nn.Conv1d) and net.residual_proj[1].bias is None
    c, _ = net(torch.randn(1, 8, 9))
    assert c.shape == (1, 16, 9)


def test_configuration_errors_name_the_field():
    with pytest.raises(ConfigError, match="stride"):
        ConvBlock(4, 4, 3, stride=2, causal=True)
    with pytest.raises(ConfigError, match=r"layers\[1\]"):
        ConvFeatureEncoder([(8, 10, 5), (8, 0, 2)])
    with pytest.raises(ConfigError, match="norm"):
        ConvFeatureEncoder([(8, 10, 5)], norm="batch")
    with pytest.raises(ConfigError, match="num_groups"):
        MaskedGroupNorm(3, 8)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        ConvFeatureEncoder([(8, 10, 5)])(torch.randn(2, 1, 100))


def test_wav2vec2_encoder_modes():
    layers = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
    enc = ConvFeatureEncoder(layers, norm="group_first", activation="gelu")
    assert isinstance(enc.blocks[0].norm, MaskedGroupNorm) and enc.blocks[0].norm.num_groups == 32
    assert all(b.norm is None for b in enc.blocks[1:])
    z, lengths = enc(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert z.shape == (2, 32, 49) and lengths.tolist() == [49, 24]
