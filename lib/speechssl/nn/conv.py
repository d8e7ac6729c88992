"""Convolutional feature encoders and causal convolutional context networks.

wav2vec (Schneider et al. 2019, Sec. 2.1) is built from two stacks of the same block:

    Conv1d -> dropout -> normalisation -> non-linearity

- the **feature encoder** ``f: X -> Z`` runs unpadded, strided convolutions over the raw
  waveform (wav2vec: kernels 10,8,4,4,4, strides 5,4,2,2,2, so one frame every 160 samples,
  10 ms at 16 kHz, each seeing 465 samples, about 30 ms);
- the **context network** ``g: Z -> C`` runs stride-1 convolutions that are *causal*: every
  layer pads ``kernel - 1`` frames on the left only, so frame ``i`` of the output depends on
  frames ``<= i`` of the input (wav2vec: 9 layers of kernel 3, a receptive field of 19
  frames, about 210 ms).

wav2vec 2.0 reuses the feature encoder with other kernels (10,3,3,3,3,2,2 / 5,2,2,2,2,2,2),
GELU and either a group norm in the first layer only or a layer norm in every layer; the
``norm`` argument of :class:`ConvFeatureEncoder` covers those modes.

Padding. Batches are padded on the right (see :func:`speechssl.data.dataset.collate_audio`).
Every module here takes the valid ``lengths`` along with the tensor and returns the lengths of
its output, and the normalisation statistics are computed over valid frames only
(:class:`MaskedGroupNorm`), so the output frames of an utterance do not depend on how much
padding the batch added: an utterance gives the same features alone or in a batch.

Normalisation and causality. The paper normalises "across the feature and temporal dimension
for each sample", a group norm with a single group (fairseq ``Fp32GroupNorm(1, dim)``).
Its mean and variance are taken over the whole utterance, so a context vector ``c_i`` depends
on later frames through these two scalars per layer (no frame-specific content). The
convolutions themselves are strictly causal; with ``norm="layer"`` (per-frame statistics) or
``norm="none"`` the whole context network is, which ``tests/test_nn_conv.py`` checks.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import config_error
from ..frames import output_lengths as conv_output_lengths
from ..frames import receptive_field, total_stride

__all__ = [
    "ConvBlock",
    "ConvContextNetwork",
    "ConvFeatureEncoder",
    "FrameLayerNorm",
    "MaskedGroupNorm",
    "NORMS",
    "ACTIVATIONS",
    "conv_output_lengths",
    "lengths_to_padding_mask",
    "make_activation",
]

#: Normalisations of :class:`ConvFeatureEncoder` / :class:`ConvContextNetwork`.
#: ``"group"``: group norm in every layer (wav2vec: one group, Sec. 2.1);
#: ``"group_first"``: a per-channel group norm in the first layer only (wav2vec 2.0 BASE,
#: fairseq ``extractor_mode="default"``); ``"layer"``: layer norm over channels at every frame
#: (wav2vec 2.0 LARGE, ``extractor_mode="layer_norm"``); ``"none"``.
NORMS = ("group", "group_first", "layer", "none")
ACTIVATIONS = ("relu", "gelu")


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise config_error("activation", "name", f"one of {ACTIVATIONS}", name)


def lengths_to_padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, max_len)`` bool, ``True`` at padded positions (fairseq convention)."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class MaskedGroupNorm(nn.Module):
    """Group normalisation over channels and *valid* time steps, in float32.

    With ``num_groups=1`` this is the normalisation of wav2vec (Sec. 2.1: "across the feature
    and temporal dimension for each sample", fairseq ``Fp32GroupNorm(1, dim)``); with
    ``num_groups=num_channels`` it is the per-channel norm of the first layer of the wav2vec 2.0
    feature encoder. Statistics use the biased variance, as :func:`torch.nn.functional.group_norm`,
    and without ``lengths`` the result is exactly ``F.group_norm``.

    Shapes: ``x`` ``(B, C, T)``, ``lengths`` ``(B,)`` or ``None`` -> ``(B, C, T)`` with padded
    frames set to 0.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        if num_groups < 1 or num_channels % num_groups != 0:
            raise config_error("MaskedGroupNorm", "num_groups",
                               f"a divisor of num_channels={num_channels}", num_groups)
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x32 = x.float()
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        bsz, chans, tsz = x.shape
        if lengths is None or bool((lengths >= tsz).all()):
            # no padding: the fused kernel (1.4x faster for wav2vec 2.0's first layer on a CPU; bench/)
            return F.group_norm(x32, self.num_groups, w, b, self.eps).type_as(x)
        g = self.num_groups
        valid = (~lengths_to_padding_mask(lengths, tsz)).to(x32.dtype)  # (B, T)
        xg = x32.view(bsz, g, chans // g, tsz)                           # (B, G, C/G, T)
        m = valid.view(bsz, 1, 1, tsz)
        count = (lengths.to(x32.dtype) * (chans // g)).clamp_min(1.0).view(bsz, 1, 1, 1)
        mean = (xg * m).sum(dim=(2, 3), keepdim=True) / count            # (B, G, 1, 1)
        var = (((xg - mean) * m) ** 2).sum(dim=(2, 3), keepdim=True) / count
        y = ((xg - mean) * torch.rsqrt(var + self.eps)).view(bsz, chans, tsz)
        if w is not None:
            y = y * w.view(1, -1, 1) + b.view(1, -1, 1)
        return (y * valid.unsqueeze(1)).type_as(x)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.weight is not None}"


class FrameLayerNorm(nn.Module):
    """Layer norm over the channels of every frame of a ``(B, C, T)`` tensor, in float32.

    Per-frame statistics keep a causal stack causal (fairseq ``norm_block(is_layer_norm=True)``,
    wav2vec 2.0 ``extractor_mode="layer_norm"``).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(num_channels, eps=eps)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        y = F.layer_norm(x.float().transpose(1, 2), self.norm.normalized_shape,
                         self.norm.weight.float(), self.norm.bias.float(), self.norm.eps)
        return y.transpose(1, 2).type_as(x)


class ConvBlock(nn.Module):
    """One layer: ``Conv1d -> dropout -> norm -> activation`` (wav2vec Sec. 2.1).

    ``causal=True`` pads ``kernel - 1`` frames on the left (replicating the first frame, as
    fairseq's ``ConvAggegator``, or with zeros), so the output has the input's length and frame
    ``i`` sees input frames ``i - kernel + 1 ... i``. ``causal=False`` runs the convolution
    unpadded (the feature encoder): ``T_out = floor((T - kernel) / stride) + 1``.

    Shapes: ``x`` ``(B, C_in, T)``, ``lengths`` ``(B,)`` -> ``(B, C_out, T_out)``, ``(B,)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, *,
                 bias: bool = True, norm: str = "group", num_groups: int = 1, activation: str = "relu",
                 dropout: float = 0.0, causal: bool = False, pad_mode: str = "replicate") -> None:
        super().__init__()
        if causal and stride != 1:
            raise config_error("ConvBlock", "stride", "1 for a causal (context) layer", stride)
        if pad_mode not in ("replicate", "zeros"):
            raise config_error("ConvBlock", "pad_mode", "'replicate' or 'zeros'", pad_mode)
        self.kernel, self.stride, self.causal, self.pad_mode = kernel, stride, causal, pad_mode
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        self.dropout = nn.Dropout(dropout)
        if norm == "group":
            self.norm: nn.Module | None = MaskedGroupNorm(num_groups, out_channels)
        elif norm == "layer":
            self.norm = FrameLayerNorm(out_channels)
        elif norm == "none":
            self.norm = None
        else:
            raise config_error("ConvBlock", "norm", "'group', 'layer' or 'none'", norm)
        self.activation = make_activation(activation)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        if self.causal:
            return lengths.to(torch.int64)
        return conv_output_lengths(lengths, [(self.kernel, self.stride)])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.causal and self.kernel > 1:
            mode = "replicate" if self.pad_mode == "replicate" else "constant"
            x = F.pad(x, (self.kernel - 1, 0), mode=mode)
        x = self.dropout(self.conv(x))
        out_lengths = None if lengths is None else self.output_lengths(lengths)
        if self.norm is not None:
            x = self.norm(x, out_lengths)
        return self.activation(x), out_lengths


def _check_layers(owner: str, layers: Sequence[Sequence[int]], width: int, names: str) -> None:
    if len(layers) == 0:
        raise config_error(owner, "layers", f"at least one layer {names}", list(layers))
    for i, layer in enumerate(layers):
        if len(layer) != width or any(int(v) != v or v < 1 for v in layer):
            raise config_error(owner, f"layers[{i}]", f"{names} of positive integers", tuple(layer))


class ConvFeatureEncoder(nn.Module):
    """Strided convolutions from the waveform to latent frames: ``f: X -> Z``.

    Args:
        layers: ``(channels, kernel, stride)`` per layer (fairseq ``conv_feature_layers``).
            wav2vec: ``[(512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2)]``.
        norm: one of :data:`NORMS` (wav2vec: ``"group"`` with one group).
        num_groups: groups of the group norm when ``norm="group"``.
        activation: ``"relu"`` (wav2vec) or ``"gelu"`` (wav2vec 2.0).
        bias: convolution bias (fairseq's encoder has none: ``bias=False``).
        dropout: dropout after each convolution (fairseq ``dropout`` inside the block).
        log_compression: apply ``log(1 + |x|)`` to the output (fairseq ``--log-compression``,
            used by the released wav2vec models; not described in the paper).

    Shapes: ``audio`` ``(B, T)``, ``lengths`` ``(B,)`` samples -> ``z`` ``(B, C, T')`` with padded
    frames set to 0, and ``(B,)`` frame lengths.
    """

    def __init__(self, layers: Sequence[tuple[int, int, int]], *, norm: str = "group", num_groups: int = 1,
                 activation: str = "relu", bias: bool = False, dropout: float = 0.0,
                 log_compression: bool = False) -> None:
        super().__init__()
        _check_layers("ConvFeatureEncoder", layers, 3, "(channels, kernel, stride)")
        if norm not in NORMS:
            raise config_error("ConvFeatureEncoder", "norm", f"one of {NORMS}", norm)
        self.layers_spec = [tuple(int(v) for v in layer) for layer in layers]
        blocks = []
        in_ch = 1
        for i, (ch, k, s) in enumerate(self.layers_spec):
            if norm == "group_first":
                layer_norm, groups = ("group", ch) if i == 0 else ("none", 1)
            else:
                layer_norm, groups = norm, num_groups
            blocks.append(ConvBlock(in_ch, ch, k, s, bias=bias, norm=layer_norm, num_groups=groups,
                                    activation=activation, dropout=dropout, causal=False))
            in_ch = ch
        self.blocks = nn.ModuleList(blocks)
        self.log_compression = log_compression
        self.out_channels = in_ch

    @property
    def kernel_strides(self) -> list[tuple[int, int]]:
        return [(k, s) for _, k, s in self.layers_spec]

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame (wav2vec: 465, about 30 ms at 16 kHz)."""
        return receptive_field(self.kernel_strides)

    @property
    def hop(self) -> int:
        """Samples between consecutive frames (wav2vec: 160, 10 ms at 16 kHz)."""
        return total_stride(self.kernel_strides)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_lengths(lengths, self.kernel_strides)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if audio.dim() != 2:
            raise ValueError(f"ConvFeatureEncoder expects audio of shape (B, T), got {tuple(audio.shape)}")
        x = audio.unsqueeze(1)  # (B, 1, T)
        for block in self.blocks:
            x, lengths = block(x, lengths)  # (B, C, T_l)
        if self.log_compression:
            x = torch.log1p(x.abs())
        if lengths is not None:
            x = x.masked_fill(lengths_to_padding_mask(lengths, x.shape[-1]).unsqueeze(1), 0.0)
        return x, lengths


class ConvContextNetwork(nn.Module):
    """Causal stride-1 convolutions that mix past frames into context vectors: ``g: Z -> C``.

    Args:
        in_channels: channels of ``z``.
        layers: ``(channels, kernel)`` per layer (fairseq ``conv_aggregator_layers`` without the
            stride). wav2vec: nine ``(512, 3)``; wav2vec large / vq-wav2vec: twelve layers of
            kernels 2, 3, ..., 13.
        norm: ``"group"`` (wav2vec), ``"layer"`` or ``"none"``.
        skip_connections: residual connections between blocks, ``x = (block(x) + x) * sqrt(residual_scale)``
            with a bias-free 1x1 projection where the width changes (wav2vec large, Sec. 2.1;
            fairseq ``skip_connections_agg``, ``residual_scale=0.5``).
        pad_mode: left padding, ``"replicate"`` (fairseq default) or ``"zeros"`` (``agg_zero_pad``).

    Shapes: ``z`` ``(B, C_in, T)``, ``lengths`` ``(B,)`` -> ``c`` ``(B, C_out, T)`` with padded
    frames set to 0, and the same lengths.
    """

    def __init__(self, in_channels: int, layers: Sequence[tuple[int, int]], *, norm: str = "group",
                 num_groups: int = 1, activation: str = "relu", bias: bool = True, dropout: float = 0.0,
                 skip_connections: bool = False, residual_scale: float = 0.5, pad_mode: str = "replicate") -> None:
        super().__init__()
        _check_layers("ConvContextNetwork", layers, 2, "(channels, kernel)")
        if norm not in ("group", "layer", "none"):
            raise config_error("ConvContextNetwork", "norm", "'group', 'layer' or 'none'", norm)
        if residual_scale <= 0:
            raise config_error("ConvContextNetwork", "residual_scale", "a positive number", residual_scale)
        self.layers_spec = [tuple(int(v) for v in layer) for layer in layers]
        self.blocks = nn.ModuleList()
        self.residual_proj = nn.ModuleList()
        in_ch = in_channels
        for ch, k in self.layers_spec:
            self.blocks.append(ConvBlock(in_ch, ch, k, 1, bias=bias, norm=norm, num_groups=num_groups,
                                         activation=activation, dropout=dropout, causal=True, pad_mode=pad_mode))
            needs_proj = skip_connections and in_ch != ch
            self.residual_proj.append(nn.Conv1d(in_ch, ch, 1, bias=False) if needs_proj else nn.Identity())
            in_ch = ch
        self.skip_connections = skip_connections
        self.residual_scale = math.sqrt(residual_scale)
        self.out_channels = in_ch

    @property
    def receptive_field(self) -> int:
        """Frames of ``z`` seen by one context vector, the current one included (wav2vec: 19)."""
        return 1 + sum(k - 1 for _, k in self.layers_spec)

    def forward(self, z: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if z.dim() != 3:
            raise ValueError(f"ConvContextNetwork expects z of shape (B, C, T), got {tuple(z.shape)}")
        x = z
        for block, proj in zip(self.blocks, self.residual_proj):
            residual = x
            x, _ = block(x, lengths)  # (B, C_l, T)
            if self.skip_connections:
                x = (x + proj(residual)) * self.residual_scale
        if lengths is not None:
            x = x.masked_fill(lengths_to_padding_mask(lengths, x.shape[-1]).unsqueeze(1), 0.0)
        return x, lengths
