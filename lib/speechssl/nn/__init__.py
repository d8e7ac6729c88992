"""Shared building blocks of the models in :mod:`speechssl.models`.

- :mod:`speechssl.nn.conv`        convolutional feature encoders and causal context networks
- :mod:`speechssl.nn.quantizers`  Gumbel-softmax and k-means vector quantizers with groups
- :mod:`speechssl.nn.losses`      wav2vec's binary contrastive loss, masked-token cross-entropy
- :mod:`speechssl.nn.masking`     the span-masking specification and BERT token corruption
- :mod:`speechssl.nn.transformer` Transformer encoder (post-/pre-LN, SDPA, LayerDrop)
"""

from .conv import (ConvBlock, ConvContextNetwork, ConvFeatureEncoder, FrameLayerNorm, MaskedGroupNorm,
                   conv_output_lengths, lengths_to_padding_mask)
from .losses import (ContrastiveOutput, binary_contrastive_chance, chance_loss, future_prediction_loss,
                     masked_token_loss, sample_negatives)
from .masking import MaskSpec, corrupt_tokens, expected_mask_fraction, span_mask
from .quantizers import (GumbelQuantizer, KMeansQuantizer, QuantizerOutput, codes_to_ids, ids_to_codes,
                         linear_temperature)
from .transformer import (ConvPositionalEmbedding, EncoderLayer, FeedForward, LearnedPositionalEmbedding,
                          SelfAttention, TransformerEncoder, TransformerOutput, init_bert_params)

__all__ = [
    "ContrastiveOutput", "ConvBlock", "ConvContextNetwork", "ConvFeatureEncoder", "ConvPositionalEmbedding",
    "EncoderLayer", "FeedForward", "FrameLayerNorm", "GumbelQuantizer", "KMeansQuantizer",
    "LearnedPositionalEmbedding", "MaskSpec", "MaskedGroupNorm", "QuantizerOutput", "SelfAttention", "TransformerEncoder",
    "TransformerOutput", "binary_contrastive_chance", "chance_loss", "codes_to_ids", "conv_output_lengths", "corrupt_tokens",
    "expected_mask_fraction", "future_prediction_loss", "ids_to_codes", "init_bert_params",
    "lengths_to_padding_mask", "linear_temperature", "masked_token_loss", "sample_negatives",
    "span_mask",
]
