"""Transformer encoder: SDPA attention against a manual computation, padding, post-/pre-LN, LayerDrop."""

import math

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.nn.transformer import (ConvPositionalEmbedding, EncoderLayer, LearnedPositionalEmbedding,
                                      SelfAttention, TransformerEncoder)


def manual_attention(att: SelfAttention, x, padding_mask):
    bsz, tsz, dim = x.shape
    h, dh = att.num_heads, att.head_dim
    q = att.q_proj(x).view(bsz, tsz, h, dh).transpose(1, 2)
    k = att.k_proj(x).view(bsz, tsz, h, dh).transpose(1, 2)
    v = att.v_proj(x).view(bsz, tsz, h, dh).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(padding_mask[:, None, None, :], float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(bsz, tsz, dim)
    return att.out_proj(y)


def test_attention_matches_a_manual_softmax_with_key_padding():
    torch.manual_seed(0)
    att = SelfAttention(16, 4).eval()
    x = torch.randn(2, 7, 16)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    torch.testing.assert_close(att(x, pad), manual_attention(att, x, pad), atol=1e-5, rtol=1e-5)


def test_padding_does_not_reach_valid_positions():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 2, 4, 32, dropout=0.0, attention_dropout=0.0).eval()
    x = torch.randn(2, 9, 16)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 5:] = True
    y = enc(x, pad).x
    x2 = x.clone()
    x2[1, 5:] = 50.0
    y2 = enc(x2, pad).x
    torch.testing.assert_close(y[1, :5], y2[1, :5])
    alone = enc(x[1:, :5]).x
    torch.testing.assert_close(y[1:, :5], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pre", [False, True])
def test_encoder_layer_formulas(pre):
    torch.manual_seed(0)
    layer = EncoderLayer(8, 2, 16, dropout=0.0, attention_dropout=0.0, layer_norm_first=pre).eval()
    x = torch.randn(1, 5, 8)
    att, ffn, ln1, ln2 = layer.attention, layer.feed_forward, layer.layer_norm, layer.final_layer_norm
    if pre:
        h = x + att(ln1(x))
        expected = h + ffn(ln2(h))
    else:
        h = ln1(x + att(x))
        expected = ln2(h + ffn(h))
    torch.testing.assert_close(layer(x), expected)


def test_hidden_states_partial_depth_and_layerdrop():
    torch.manual_seed(0)
    enc = TransformerEncoder(8, 3, 2, 16, dropout=0.0, attention_dropout=0.0, layer_drop=0.999)
    x = torch.randn(2, 4, 8)
    enc.eval()
    out = enc(x, return_hidden_states=True)
    assert len(out.hidden_states) == 4 and torch.equal(out.hidden_states[-1], out.x)
    first = enc(x, num_layers=1).x
    torch.testing.assert_close(first, out.hidden_states[1])
    enc.train()                                  # nearly every layer dropped
    dropped = enc(x, return_hidden_states=True)
    torch.testing.assert_close(dropped.x, enc.layer_norm(x))
    pre = TransformerEncoder(8, 2, 2, 16, layer_norm_first=True).eval()
    out = pre(x, return_hidden_states=True)
    torch.testing.assert_close(out.x, pre.layer_norm(out.hidden_states[-1]))


def test_positional_embeddings():
    emb = LearnedPositionalEmbedding(10, 8)
    assert emb(torch.zeros(3, 6, 8)).shape == (1, 6, 8)
    with pytest.raises(ValueError, match="max_positions=10"):
        emb(torch.zeros(1, 11, 8))
    conv = ConvPositionalEmbedding(32, kernel_size=128, groups=16)
    assert conv(torch.randn(2, 50, 32)).shape == (2, 50, 32)
    assert ConvPositionalEmbedding(32, kernel_size=5, groups=4)(torch.randn(1, 7, 32)).shape == (1, 7, 32)
    enc = TransformerEncoder(32, 1, 4, 64, pos_embedding=ConvPositionalEmbedding(32, 16, 4))
    assert enc(torch.randn(1, 20, 32)).x.shape == (1, 20, 32)


def test_transformer_config_errors():
    with pytest.raises(ConfigError, match="num_heads"):
        SelfAttention(10, 3)
    with pytest.raises(ConfigError, match="layer_drop"):
        TransformerEncoder(8, 1, 2, 16, layer_drop=1.0)
    with pytest.raises(ConfigError, match="num_layers"):
        TransformerEncoder(8, 0, 2, 16)
