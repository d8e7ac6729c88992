"""Weights from other implementations of wav2vec 2.0, renamed for :class:`speechssl.models.wav2vec2.Wav2Vec2`.

The architecture is the same everywhere; only the names differ. :func:`from_torchaudio` renames
the state dict of ``torchaudio.models.wav2vec2_model`` (the encoder and Transformer; torchaudio
has no quantizer); :func:`from_fairseq` renames the ``model`` entry of a fairseq ``Wav2Vec2Model``
checkpoint, quantizer included (a fine-tuned checkpoint's ``w2v_model.`` prefix is removed);
:func:`from_huggingface` renames a ``transformers`` ``Wav2Vec2Model``, ``Wav2Vec2ForPreTraining``
or ``Wav2Vec2ForCTC`` state dict. :func:`load_pretrained` loads a renamed dict and fails with the
list of keys that are missing or unexpected, so a checkpoint of another architecture is never
half-loaded in silence.

The command writes released weights as a checkpoint of this library, which every command that reads a
pre-trained wav2vec 2.0 then takes (``python -m speechssl.wav2vec_u --model``, ``speechssl.finetune
--pretrained``):

    python -m speechssl.interop huggingface facebook/wav2vec2-large-lv60 --out runs/wav2vec2-large-lv60.pt
    python -m speechssl.interop fairseq wav2vec_vox_new.pt --preset large --out runs/wav2vec2-large-lv60.pt

A ``transformers`` model brings its architecture (:func:`config_from_huggingface`); a fairseq file is read
with the library's ``--preset`` (``base`` or ``large``), and a mismatch is an error that lists the keys. A fairseq
file pickles its settings, so it is read with ``weights_only=False``: give the command trusted files only.

The checkpoint also records whether the model reads standardised waveforms (zero mean and unit variance per
utterance), as its own runs' checkpoints do (``config.normalize``): the LV-60k LARGE models were pre-trained on such
input (fairseq ``task.normalize: true``) and give other features without it. It is read from the fairseq file's task
settings, or from the ``transformers`` model's feature extractor (``do_normalize``); a model folder without one is
taken to normalise when its encoder is the layer-norm kind of LARGE LV-60k (``feat_extract_norm: layer``).
:func:`speechssl.hubert.load_encoder` and the CTC fine-tuning then standardise every waveform they give it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["PRETRAINING_ONLY", "config_from_huggingface", "fairseq_normalize", "from_fairseq", "from_huggingface",
           "from_torchaudio", "from_torchaudio_hubert", "huggingface_normalize", "load_pretrained", "main"]

#: Parameters of :class:`~speechssl.models.wav2vec2.Wav2Vec2` and :class:`~speechssl.models.hubert.Hubert`
#: used only by the pre-training task; an encoder-only checkpoint (torchaudio, a fine-tuned model) does not
#: have them.
PRETRAINING_ONLY = ("mask_emb", "quantizer.", "project_q.", "final_proj.", "label_embs")

# (torchaudio pattern, our replacement); applied in order to every key
_TORCHAUDIO = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_encoder.blocks.\1.conv."),
    (r"^encoder\.feature_projection\.layer_norm\.", "layer_norm."),
    (r"^encoder\.feature_projection\.projection\.", "post_extract_proj."),
    (r"^encoder\.transformer\.pos_conv_embed\.conv\.", "encoder.pos_embedding.conv."),
    (r"^encoder\.transformer\.layer_norm\.", "encoder.layer_norm."),
    (r"^encoder\.transformer\.layers\.", "encoder.layers."),
]


def from_torchaudio(state_dict: Mapping[str, torch.Tensor], extractor_mode: str) -> dict[str, torch.Tensor]:
    """Rename a ``torchaudio.models.Wav2Vec2Model`` state dict to our names.

    ``extractor_mode`` is the model's (``"group_norm"``: torchaudio's group norm of layer 0 is our
    ``MaskedGroupNorm``; ``"layer_norm"``: each layer's layer norm is our ``FrameLayerNorm``).
    Keys of a fine-tuning head (``aux.*``) are not renamed and will be reported as unexpected.
    """
    if extractor_mode not in ("group_norm", "layer_norm"):
        raise ConfigError(f"from_torchaudio.extractor_mode: expected 'group_norm' or 'layer_norm', found "
                          f"{extractor_mode!r}")
    norm = "norm." if extractor_mode == "group_norm" else "norm.norm."
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = re.sub(r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", rf"feature_encoder.blocks.\1.{norm}", key)
        for pattern, repl in _TORCHAUDIO:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


def from_torchaudio_hubert(state_dict: Mapping[str, torch.Tensor], extractor_mode: str) -> dict[str, torch.Tensor]:
    """Rename a ``torchaudio.models.HuBERTPretrainModel`` state dict (``hubert_pretrain_base`` ...) to the
    names of :class:`~speechssl.models.hubert.Hubert`: the encoder ``wav2vec2.*`` as :func:`from_torchaudio`,
    ``mask_generator.mask_embedding`` -> ``mask_emb``, ``logit_generator.final_proj`` -> ``final_proj``,
    ``logit_generator.label_embeddings`` -> ``label_embs``."""
    head = {"mask_generator.mask_embedding": "mask_emb", "logit_generator.label_embeddings": "label_embs"}
    encoder, out = {}, {}
    for key, value in state_dict.items():
        if key in head:
            out[head[key]] = value
        elif key.startswith("logit_generator.final_proj."):
            out[key.removeprefix("logit_generator.")] = value
        else:
            encoder[key.removeprefix("wav2vec2.")] = value
    out.update(from_torchaudio(encoder, extractor_mode))
    return out


# fairseq name -> torchaudio name of the encoder (the same renaming torchaudio's own fairseq importer does)
_FAIRSEQ = [
    (r"^feature_extractor\.conv_layers\.0\.2\.(weight|bias)$", r"feature_extractor.conv_layers.0.layer_norm.\1"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"^post_extract_proj\.", "encoder.feature_projection.projection."),
    (r"^layer_norm\.", "encoder.feature_projection.layer_norm."),
    (r"^encoder\.pos_conv\.0\.bias$", "encoder.transformer.pos_conv_embed.conv.bias"),
    (r"^encoder\.pos_conv\.0\.weight_g$", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv\.0\.weight_v$", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.layer_norm\.", "encoder.transformer.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.", r"encoder.transformer.layers.\1.attention."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.transformer.layers.\1.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.fc1\.", r"encoder.transformer.layers.\1.feed_forward.intermediate_dense."),
    (r"^encoder\.layers\.(\d+)\.fc2\.", r"encoder.transformer.layers.\1.feed_forward.output_dense."),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.transformer.layers.\1.final_layer_norm."),
]


def _first_match(table: list[tuple[str, str]], key: str) -> str | None:
    for pattern, repl in table:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def fairseq_to_torchaudio_key(key: str) -> str | None:
    """The torchaudio name of a fairseq encoder key, or ``None`` for a key torchaudio does not have."""
    return _first_match(_FAIRSEQ, key)


def _rename(state_dict: Mapping[str, torch.Tensor], extractor_mode: str, *, prefix: str, codebook: str,
            head: list[tuple[str, str]], encoder_table: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Shared by the importers: strip ``prefix``; the codebook ``(1, G V, d)`` -> ``(G V, d)``; the
    pre-training head by the ``head`` patterns; the encoder by ``encoder_table`` into torchaudio's
    names, then :func:`from_torchaudio`; any other key is kept as it is."""
    encoder: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix(prefix)
        if key == codebook:
            out["quantizer.codebook"] = value.reshape(-1, value.shape[-1])
        elif (ours := _first_match(head, key)) is not None:
            out[ours] = value
        elif (ta := _first_match(encoder_table, key)) is not None:
            encoder[ta] = value
        else:
            out[key] = value
    out.update(from_torchaudio(encoder, extractor_mode))
    return out


def from_fairseq(state_dict: Mapping[str, torch.Tensor], extractor_mode: str) -> dict[str, torch.Tensor]:
    """Rename the ``model`` state dict of a fairseq ``Wav2Vec2Model`` checkpoint to our names.

    The encoder goes through the torchaudio names (:func:`from_torchaudio`); the pre-training head
    maps directly: ``mask_emb``; ``quantizer.vars`` ``(1, G V, d)`` -> ``quantizer.codebook``
    ``(G V, d)``; ``quantizer.weight_proj`` -> ``quantizer.logits_proj``; ``project_q``;
    ``final_proj``. fairseq's old-style weight norm (``weight_g``, ``weight_v``) becomes the
    parametrisation of the positional convolution. A fine-tuned checkpoint's ``w2v_model.``
    prefix is removed; other keys (a fine-tuning head ``proj.*``) are kept and reported by
    :func:`load_pretrained` as unexpected.
    """
    head = [(r"^quantizer\.weight_proj\.", "quantizer.logits_proj."),
            (r"^(mask_emb|project_q\..*|final_proj\..*)$", r"\1")]
    return _rename(state_dict, extractor_mode, prefix="w2v_model.", codebook="quantizer.vars", head=head,
                   encoder_table=_FAIRSEQ)


# Hugging Face name (``wav2vec2.`` prefix removed) -> torchaudio name of the encoder
_HUGGINGFACE = [
    (r"^(feature_extractor\.conv_layers\.\d+\.(conv|layer_norm)\.(weight|bias))$", r"\1"),
    (r"^feature_projection\.", "encoder.feature_projection."),
    (r"^encoder\.pos_conv_embed\.conv\.weight_g$", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv_embed\.conv\.weight_v$", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.(pos_conv_embed|layer_norm|layers)\.", r"encoder.transformer.\1."),
]


def from_huggingface(state_dict: Mapping[str, torch.Tensor], extractor_mode: str, *, prefix: str = "wav2vec2."
                     ) -> dict[str, torch.Tensor]:
    """Rename a ``transformers`` wav2vec 2.0 or HuBERT state dict to our names.

    Accepts ``Wav2Vec2Model`` / ``HubertModel`` (no prefix) and ``Wav2Vec2ForPreTraining`` /
    ``Wav2Vec2ForCTC`` (``wav2vec2.`` prefix) or ``HubertForCTC`` (``prefix="hubert."``). The encoder goes through the torchaudio names (:func:`from_torchaudio`;
    ``extractor_mode`` is ``"group_norm"`` for ``feat_extract_norm="group"``, ``"layer_norm"``
    for ``"layer"``); the pre-training head maps directly: ``masked_spec_embed`` -> ``mask_emb``,
    ``quantizer.codevectors`` ``(1, G V, d)`` -> ``quantizer.codebook``, ``quantizer.weight_proj``
    -> ``quantizer.logits_proj``, ``project_hid`` -> ``final_proj``, ``project_q``. Other keys (a
    CTC ``lm_head``, an adapter) are kept and reported by :func:`load_pretrained` as unexpected.
    """
    head = [(r"^masked_spec_embed$", "mask_emb"), (r"^quantizer\.weight_proj\.", "quantizer.logits_proj."),
            (r"^project_hid\.", "final_proj."), (r"^(project_q\..*)$", r"\1")]
    return _rename(state_dict, extractor_mode, prefix=prefix, codebook="quantizer.codevectors", head=head,
                   encoder_table=_HUGGINGFACE)


def load_pretrained(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict",
                    allow_missing: Iterable[str] = PRETRAINING_ONLY) -> None:
    """Load ``state_dict`` (already in our names) into ``model``, strictly.

    Keys of ``model`` starting with one of ``allow_missing`` may be absent (the pre-training
    parts, which keep their initial values); any other missing key, any unexpected key and any
    shape mismatch raises :class:`~speechssl.errors.ConfigError` listing them.
    """
    allow = tuple(allow_missing)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not any(k == p or k.startswith(p) for p in allow)]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: {tuple(state_dict[k].shape)} for {tuple(own[k].shape)}" for k in state_dict
              if k in own and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {missing[:20]}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {shapes[:10]}")
        raise ConfigError(f"cannot load {source} into {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=False)


def config_from_huggingface(config):
    """The :class:`~speechssl.models.wav2vec2.Wav2Vec2Config` of a ``transformers.Wav2Vec2Config``'s architecture
    (the training-only settings, dropouts and masking, keep the library's defaults)."""
    from .models.wav2vec2 import Wav2Vec2Config

    return Wav2Vec2Config(
        conv_layers=tuple(zip(config.conv_dim, config.conv_kernel, config.conv_stride)),
        extractor_mode="layer_norm" if config.feat_extract_norm == "layer" else "group_norm",
        conv_bias=bool(config.conv_bias), embed_dim=config.hidden_size, num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads, ffn_dim=config.intermediate_size,
        layer_norm_first=bool(config.do_stable_layer_norm), conv_pos=config.num_conv_pos_embeddings,
        conv_pos_groups=config.num_conv_pos_embedding_groups, final_dim=config.proj_codevector_dim,
        num_vars=config.num_codevectors_per_group, groups=config.num_codevector_groups)


def huggingface_normalize(source: str, config) -> bool:
    """Whether the ``transformers`` model at ``source`` reads standardised waveforms: its feature extractor's
    ``do_normalize``, or, without a feature extractor, whether its encoder is LARGE LV-60k's layer-norm kind."""
    import transformers

    try:
        return bool(transformers.Wav2Vec2FeatureExtractor.from_pretrained(source).do_normalize)
    except OSError:                                       # no preprocessor_config.json
        return config.feat_extract_norm == "layer"


def fairseq_normalize(state: Mapping, source: str) -> bool:
    """fairseq's ``task.normalize`` of a checkpoint (its hydra ``cfg`` or, in older files, its argparse ``args``)."""
    cfg, args = state.get("cfg"), state.get("args")
    task = cfg.get("task") if cfg is not None else None
    if task is not None and "normalize" in task:
        return bool(task["normalize"])
    if args is not None and hasattr(args, "normalize"):
        return bool(args.normalize)
    raise ConfigError(f"{source}: expected fairseq's task settings (cfg.task.normalize or args.normalize), which say "
                      f"whether the model reads standardised waveforms, found neither; pass --normalize or "
                      f"--no-normalize")


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m speechssl.interop",
                                description="Write released wav2vec 2.0 weights as a checkpoint of this library.")
    p.add_argument("kind", choices=("huggingface", "fairseq"), help="where the weights come from")
    p.add_argument("source", help="a transformers model name or folder (huggingface), or a fairseq checkpoint file "
                                  "(only a trusted one: fairseq pickles its settings, so the file is fully unpickled)")
    p.add_argument("--preset", choices=("base", "large"), default=None,
                   help="the architecture of a fairseq file (a transformers model brings its own)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="whether the model reads standardised waveforms (default: what the source says)")
    p.add_argument("--out", required=True, help="the checkpoint file to write")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 2 for a bad command line or source, 1 for a failed conversion, 0 on success."""
    from pathlib import Path

    from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, model_config_of, save_checkpoint
    from .cli import run_command
    from .models.wav2vec2 import Wav2Vec2, Wav2Vec2Config

    parser = build_arg_parser()
    args = parser.parse_args(argv)

    def body(info) -> int:
        if args.kind == "huggingface":
            if args.preset is not None:
                raise ConfigError("--preset: a transformers model brings its architecture; leave --preset out")
            import transformers

            released = transformers.Wav2Vec2ForPreTraining.from_pretrained(args.source)
            cfg = config_from_huggingface(released.config)
            renamed = from_huggingface(released.state_dict(), cfg.extractor_mode)
            normalize = huggingface_normalize(args.source, released.config) if args.normalize is None else args.normalize
        else:
            if args.preset is None:
                raise ConfigError("--preset: a fairseq file needs the architecture it holds, base or large; found none")
            if not Path(args.source).is_file():
                raise ConfigError(f"{args.source}: expected a fairseq checkpoint file, found nothing there")
            cfg = Wav2Vec2Config.preset(args.preset)
            # fairseq checkpoints pickle their settings (argparse or omegaconf objects): read only trusted files
            state = torch.load(args.source, map_location="cpu", weights_only=False)
            renamed = from_fairseq(state["model"] if "model" in state else state, cfg.extractor_mode)
            normalize = fairseq_normalize(state, args.source) if args.normalize is None else args.normalize
        model = Wav2Vec2(cfg)
        load_pretrained(model, renamed, source=args.source)
        save_checkpoint(args.out, {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_name": "wav2vec2",
                                   "model_config": model_config_of(model), "model": model.state_dict(), "step": 0,
                                   "config": {"normalize": normalize}, "source": args.source})
        print(f"{args.source}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
              f"{cfg.num_layers} Transformer layers of width {cfg.embed_dim}, "
              f"{'standardised' if normalize else 'raw'} waveforms; written to {args.out}")
        return 0

    return run_command(parser.prog, body)


if __name__ == "__main__":
    sys.exit(main())
