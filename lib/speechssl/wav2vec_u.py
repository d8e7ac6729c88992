"""wav2vec-U's command: the whole pipeline of fairseq ``examples/wav2vec/unsupervised``, stage by stage.

Audio side and silence: :mod:`speechssl.segmentation` (``AudioPipeline``). Text side and the selection
metric: :mod:`speechssl.unpaired`. The GAN and its training: :mod:`speechssl.models.wav2vec_u`,
:mod:`speechssl.gan`. Self-training: :mod:`speechssl.self_training`.

The command runs the whole of it on a layer of a pre-trained HuBERT or wav2vec 2.0 (:func:`load_feature_model`),
each stage cached in its folder (``runs/wav2vec-u-<scale>``) and skipped when its output is there and was made
from the same inputs:

    python -m speechssl.wav2vec_u --scale tiny --model runs/hubert-tiny/iter2/model

It reads the synthetic corpus of the scale and its unpaired-text split, or LibriSpeech (``--data
librispeech:PATH --subsets ...``) with the unpaired text of ``--text`` (:func:`~speechssl.unpaired.read_sentences`)
and the unlabelled ``--dev-subsets``; LibriSpeech has no phone transcripts, so no PER is measured there. The
paper's run reads released wav2vec 2.0 LARGE LV-60k weights, written as a checkpoint that records their
standardised input (:mod:`speechssl.interop`); its layer features and its self-training then read standardised
waveforms, and the self-training takes fairseq's ``vox_10m.yaml`` (:func:`~speechssl.recipes.ctc_recipe`):

    python -m speechssl.interop huggingface facebook/wav2vec2-large-lv60 --out runs/wav2vec2-large-lv60.pt
    python -m speechssl.wav2vec_u --scale full --model runs/wav2vec2-large-lv60.pt \\
        --data librispeech:/data --subsets train-clean-100 train-clean-360 train-other-500 \\
        --text /data/librispeech-lm-norm.txt

1. **segments** (``segments.pt``): :class:`AudioPipeline` fitted on the pre-training split, applied to it
   and to ``dev`` and ``test``;
2. **text** (``text.pt``): the unpaired sentences through :func:`lexicon` and :func:`with_silence`, and
   the phone 4-gram of the sentences without silence;
3. **GAN** (``gan-seed<N>.pt``, one per seed): :func:`~speechssl.gan.train_gan` with the scale's
   :data:`PLANS` entry, evaluated on ``dev`` every ``eval_every`` updates; an interrupted seed continues
   from its last evaluation;
4. **selection** (``selected.json``): the checkpoint of lowest ``weighted_lm_ppl`` over every seed and
   evaluation. Dev PER is recorded beside it when the corpus has transcripts, and never used to choose;
5. **references** (``baselines.json``, with transcripts only): the dev PER of the majority phone, of the
   phone LM alone and of the supervised ceiling;
6. **self-training** (``self-training/``, ``self-training.json``): the pre-trained model fine-tuned with
   CTC on the selected generator's transcripts of the pre-training audio
   (:func:`~speechssl.self_training.self_train`); not with ``--model mfcc``, which has no model to tune.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cipher import CipherStages, cipher_features, frequency_code, solution_weights, true_segments
from .data.phones import PHONES, SILENCE
from .errors import ConfigError
from .ngram import PhoneLM
from .segmentation import (AudioPipeline, SegmentedAudio, pool_adjacent, remove_silence, segment_means,
                           spliced_mfcc, voiced_intervals)
from .unpaired import (InventoryError, Selection, check_inventory, check_same_inventory, lexicon, pad_sequences,
                       phones_without_silence, text_batches, vocabulary_usage, weighted_lm_ppl, with_silence)

__all__ = ["InventoryError", "voiced_intervals", "remove_silence", "check_inventory", "check_same_inventory",
           "segment_means", "pool_adjacent", "lexicon", "with_silence", "vocabulary_usage", "weighted_lm_ppl",
           "Selection", "pad_sequences", "phones_without_silence", "text_batches", "SegmentedAudio", "AudioPipeline",
           "PLANS", "Plan", "Stages", "main", "true_segments", "cipher_features", "solution_weights", "frequency_code",
           "layer_source", "mfcc_source", "load_feature_model"]


# -- the command --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """A scale's run: the feature model's layer, ``K``, the PCA dimension, the GAN's and its training's
    settings over ``w2vu.yaml``'s defaults, the seeds the selection chooses among, and the cipher's training
    settings over ``train`` (:meth:`~speechssl.cipher.CipherStages.cipher` with ``train=plan.cipher``)."""

    layer: int
    num_clusters: int
    pca_dim: int
    gan: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    cipher: dict = field(default_factory=dict)


PLANS = {
    # the paper (Sec. 2.3, 4.1; w2vu.yaml; the README's sweep over seeds 0-4): K = 128, PCA 512, 150k updates
    # of 160 utterances; its features are the output of block 15 of wav2vec 2.0 LARGE's 24 (Sec. 2.2, Fig. 2;
    # fairseq's ``--layer 14`` counts blocks from 0), layer 15 here, where layer 0 is the Transformer's input
    "full": Plan(15, 128, 512, seeds=(0, 1, 2, 3, 4)),
    # one GPU: half of the PCA dimension and a quarter of the updates
    "reduced": Plan(3, 128, 256, {"input_dim": 256}, {"max_updates": 40_000}, (0, 1, 2)),
    # 2 CPU cores: K = 64 and PCA 32 on 24 minutes of audio, a discriminator of 16 channels, batches of 32 and
    # 2,000 updates (23 s a seed on the pinned kernel path), so three seeds fit a chapter's budget. The layer is
    # the paper's criterion (Sec. 2.2, Fig. 2: a linear CTC phone probe on each block, ``gan.linear_ctc`` with
    # kernel 1 and 1,500 updates on the pre-training split's frames); on chapter 5's HuBERT iteration 2, dev PER
    # 0.640, 0.662, 0.658, 0.659, 0.674 for layers 0-4 (MFCC frames: 0.671), so layer 0, the Transformer's input
    # The cipher needs more: at w2vu.yaml's rates its dev PER stays at 0.83-0.86, near the frequency-rank reading,
    # for 45,000 updates (seed 0) and falls to 0.40 only by 150,000 (1,894 s). Three times those rates start the
    # descent within 10,000 updates for seed 0, so the cipher's run is 15,000 updates at that pace (about 3 minutes).
    "tiny": Plan(0, 64, 32, {"input_dim": 32, "discriminator_dim": 16},
                 {"batch_size": 32, "max_updates": 2_000, "eval_every": 250}, (0, 1, 2),
                 {"max_updates": 15_000, "eval_every": 2_500, "lr_generator": 1.2e-3, "lr_discriminator": 1.5e-3}),
}


def _fingerprint(*parts) -> str:
    from .units import fingerprint

    return fingerprint(*parts)


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path, key: str) -> dict | None:
    """What :func:`_write_json` wrote at ``path`` if it was made under fingerprint ``key``; ``None`` when the file
    is missing, unreadable (it is then made again) or of other inputs."""
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return cached if cached.get("key") == key else None


def load_feature_model(path) -> torch.nn.Module:
    """The pre-trained HuBERT or wav2vec 2.0 of a run folder or checkpoint (``--model``), in eval mode
    (:func:`~speechssl.hubert.load_encoder`). Released wav2vec 2.0 weights load through
    :mod:`speechssl.interop`, which writes such a checkpoint."""
    from .hubert import load_encoder

    return load_encoder(path, purpose="read the --model features")


def layer_source(model, layer: int):
    """The featuriser of a HuBERT's or wav2vec 2.0's Transformer ``layer`` (0: its input) and the fingerprint
    that names it (model, weights and layer, and whether it standardises the waveforms)."""
    from .hubert import layer_featurizer
    from .models import Wav2Vec2

    name = "wav2vec2" if isinstance(model, Wav2Vec2) else "hubert"
    normalized = ("normalize",) if getattr(model, "normalize_waveform", False) else ()
    return layer_featurizer(model, layer), _fingerprint(
        f"{name}-layer", layer, sorted((k, v.numpy().tobytes()) for k, v in model.state_dict().items()), *normalized)


def mfcc_source():
    """The spliced-MFCC featuriser (the baseline without self-supervision) and the fingerprint that names it."""
    return spliced_mfcc, _fingerprint("spliced-mfcc-39x9")


class Stages(CipherStages):
    """The command's stages over ``train`` (unlabelled audio), ``dev`` and ``text`` (unpaired sentences)
    of the corpus at ``root``, cached in ``folder``; ``featurize`` reads the layer, ``source`` names it."""

    def __init__(self, folder, root, train: Sequence, dev: Sequence, text: Sequence, featurize, source: str,
                 plan: Plan, *, silence_prob: float = 0.25, test: Sequence = (), runs: str = "gan"):
        if not text:
            raise ConfigError(f"unpaired text: expected at least one sentence in {root}, found an empty split")
        self.folder, self.root, self.train, self.dev, self.text = Path(folder), Path(root), train, dev, text
        self.test, self.runs = test, runs          # runs: the GAN checkpoints' prefix, for another plan's GAN
        self.featurize, self.plan, self.silence_prob = featurize, plan, silence_prob
        self.corpus = _fingerprint(sorted((u.id, u.num_samples) for u in [*train, *dev, *test]))
        self.source = source

    def _cached(self, name: str, key: str) -> dict | None:
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"{path}: cannot read it: the file is truncated or corrupt ({type(e).__name__}); "
                              f"delete it, or pass --overwrite") from None
        if state.get("key") != key:
            raise ConfigError(f"{path}: made from another corpus, model or setting (fingerprint {state.get('key')}, "
                              f"expected {key}); pass --overwrite to make every stage again, or use another --out")
        return state

    def segments(self) -> dict:
        """``{"train": [(S, D)], "dev": [(S, D)], "test": [(S, D)], "explained": PCA's explained variance
        ratio, "train_segments"/"dev_segments": frames per segment before pooling, "dev_kept": voiced
        intervals}`` (``test`` is empty without test utterances)."""
        from .checkpoint import save_checkpoint

        p = self.plan
        key = _fingerprint(self.source, self.corpus, p.num_clusters, p.pca_dim)
        state = self._cached("segments.pt", key)
        if state is None or "train_segments" not in state:          # (made before it kept the training segments)
            pipe = AudioPipeline(self.featurize, self.root, num_clusters=p.num_clusters, pca_dim=p.pca_dim)
            train, dev = pipe.fit_transform(self.train), pipe.transform(self.dev)
            state = {"key": key, "train": train.features, "dev": dev.features, "train_segments": train.segments,
                     "test": pipe.transform(self.test).features if self.test else [],
                     "explained": float(pipe.pca.explained_variance_ratio_.sum()),
                     "dev_segments": dev.segments, "dev_kept": dev.kept}
            save_checkpoint(self.folder / "segments.pt", state)
        return state

    def sentences(self) -> dict:
        """``{"with_silence": [[phone]], "plain": [[phone]]}``: the text the discriminator reads, and the LM's."""
        from .checkpoint import save_checkpoint

        key = _fingerprint(sorted((s.id, tuple(s.words)) for s in self.text), self.silence_prob)
        state = self._cached("text.pt", key)
        if state is None:
            lex = lexicon(w for s in self.text for w in s.words)
            words = [[lex[w] for w in s.words] for s in self.text]
            rng = random.Random(0)
            state = {"key": key, "plain": [[p for w in ws for p in w] for ws in words],
                     "with_silence": [with_silence(ws, self.silence_prob, rng) for ws in words]}
            check_inventory(state["plain"], PHONES, "unpaired text (through the lexicon)")
            save_checkpoint(self.folder / "text.pt", state)
        return state

    def gan(self, seed: int, on_eval=None) -> list[dict]:
        """Seed ``seed``'s GAN run: one entry per evaluation (update, losses, the selection metric, dev PER
        when there are transcripts, and the generator's weights)."""
        from .gan import GanData, GanTrainConfig, track
        from .models.wav2vec_u import GanConfig, Wav2VecU

        seg, text = self.segments(), self.sentences()
        x, lengths = pad_sequences(seg["train"])
        y, ylengths = text_batches(text["with_silence"])
        torch.manual_seed(seed)
        model = Wav2VecU(GanConfig(**{"input_dim": x.size(-1), **self.plan.gan}))
        cfg = GanTrainConfig(**{**self.plan.train, "seed": seed})
        units, key = None, _fingerprint(seg["key"], text["key"])
        if model.cfg.aux_weight > 0:
            targets = self.units(model.cfg.aux_units)
            units, key = pad_sequences(targets["train"], value=-1)[0], _fingerprint(key, targets["key"])
        return track(model, GanData(x, lengths, y, ylengths, units), cfg, PhoneLM(text["plain"], order=4),
                     *pad_sequences(seg["dev"]), self.references(self.dev), on_eval=on_eval,
                     checkpoint=self.folder / f"{self.runs}-seed{seed}.pt", data_key=key)

    def units(self, num_units: int) -> dict:
        """wav2vec-U 2.0's auxiliary targets of the training segments (``units-<K>.pt``): ``{"train": [(S,)],
        "in_use": int}`` (:func:`~speechssl.segmentation.mfcc_unit_targets`)."""
        from .checkpoint import save_checkpoint
        from .segmentation import mfcc_unit_targets

        seg = self.segments()
        key = _fingerprint("mfcc-units", seg["key"], num_units)
        name = f"units-{num_units}.pt"
        state = self._cached(name, key)
        if state is None:
            targets = mfcc_unit_targets(self.train, self.root, seg["train_segments"], num_units)
            used = torch.cat(targets)
            state = {"key": key, "train": targets, "in_use": int(torch.unique(used[used >= 0]).numel())}
            save_checkpoint(self.folder / name, state)
        return state

    @staticmethod
    def references(utterances: Sequence) -> list[list[str]] | None:
        """The phone transcripts of ``utterances`` without ``sil``; ``None`` when any has none."""
        if not all(getattr(u, "phones", None) for u in utterances):
            return None
        return [[p for p in u.phones if p != SILENCE] for u in utterances]

    def _gan_config(self, **gan):
        """The GAN of this plan on segments of its PCA dimension, ``gan`` settings over the plan's."""
        from .models.wav2vec_u import GanConfig

        return GanConfig(**{"input_dim": self.plan.pca_dim, **self.plan.gan, **gan})

    def model(self, point: dict) -> "Wav2VecU":
        """The GAN of this plan with the generator saved in an evaluation ``point`` of :meth:`gan`."""
        from .models.wav2vec_u import Wav2VecU

        model = Wav2VecU(self._gan_config())
        model.generator.load_state_dict(point["generator"])
        return model.eval()

    def score(self, point: dict, split: str = "test") -> tuple[float | None, list[list[str]]]:
        """PER of the generator of ``point`` on the ``dev`` or ``test`` segments (``None`` without transcripts)
        and its phone sequences, ``sil`` removed."""
        from .gan import evaluate

        x, n = pad_sequences(self.segments()[split])
        lm = PhoneLM(self.sentences()["plain"], order=4)
        _, per, hyps = evaluate(self.model(point), x, n, lm, PHONES,
                                self.references(self.test if split == "test" else self.dev))
        return per, hyps

    def baselines(self, updates: int = 1500) -> dict | None:
        """Dev PER of what the GAN is measured against (``baselines.json``; ``None`` when the corpus has no
        transcripts): always the text's most frequent phone, the phone LM alone (one sampled sentence per
        utterance), and the supervised ceiling, the generator's architecture trained with CTC on the
        training transcripts (:func:`~speechssl.gan.linear_ctc`). Labels are read only here."""
        from .gan import linear_ctc
        from .metrics import phone_error_rate

        if not all(u.phones for u in [*self.train, *self.dev]):
            return None
        path = self.folder / "baselines.json"
        key = _fingerprint(self.source, self.corpus, self.plan.num_clusters, self.plan.pca_dim, updates)
        cached = _read_json(path, key)
        if cached is not None:
            return cached
        refs = self.references(self.dev)
        text = self.sentences()["plain"]
        majority = Counter(ph for sent in text for ph in sent).most_common(1)[0][0]
        lm, rng = PhoneLM(text, order=4), random.Random(0)
        seg = self.segments()
        x, lengths = pad_sequences(seg["train"])
        dx, dlengths = pad_sequences(seg["dev"])
        targets = [[PHONES.index(p) for p in u.phones if p != SILENCE] for u in self.train]
        ceiling = linear_ctc(x, lengths, targets, dx, dlengths, num_phones=len(PHONES), updates=updates)
        out = {"key": key, "majority_phone": majority,
               "majority": phone_error_rate(refs, [[majority]] * len(refs)).rate,
               "lm_alone": phone_error_rate(refs, [lm.sample(rng) for _ in refs]).rate,
               "supervised_ceiling": phone_error_rate(refs, [[PHONES[i] for i in h] for h in ceiling]).rate}
        _write_json(path, out)
        return out

    def select(self, histories: Sequence[Sequence[dict]], record: str = "selected.json") -> dict:
        """The evaluation of lowest ``weighted_lm_ppl`` over every seed and update, generator included (for
        :meth:`score`); the file ``record`` of the folder keeps it without the weights."""
        best = min((h for hs in histories for h in hs), key=lambda h: h["weighted_lm_ppl"])
        _write_json(self.folder / record, {k: v for k, v in best.items() if k != "generator"})
        return best


def build_arg_parser() -> argparse.ArgumentParser:
    from .cli import add_data_options

    p = argparse.ArgumentParser(prog="python -m speechssl.wav2vec_u", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="run folder or checkpoint of a pre-trained HuBERT or wav2vec 2.0, or 'mfcc' for spliced MFCC "
                        "frames (the baseline without self-supervision)")
    p.add_argument("--layer", type=int, default=None, help="its Transformer layer (0: its input); default: the scale's")
    p.add_argument("--num-clusters", type=int, default=None, help="K of the segmenting k-means")
    p.add_argument("--pca-dim", type=int, default=None, help="PCA dimension of the segment features")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="GAN seeds to select among")
    p.add_argument("--max-updates", type=int, default=None, help="GAN updates per seed")
    p.add_argument("--out", default=None, help="folder of the stages (default: <runs_dir>/wav2vec-u-<scale>)")
    p.add_argument("--overwrite", action="store_true", help="make every stage again")
    p.add_argument("--no-self-training", action="store_true",
                   help="stop after the selection and the references (no CTC fine-tuning on the generator's "
                        "transcripts)")
    add_data_options(p, split="pretrain")
    p.add_argument("--text", default=None,
                   help="with LibriSpeech: the unpaired text, one sentence per line (the paper's "
                        "librispeech-lm-norm.txt, or its .gz); the synthetic corpus brings its own")
    p.add_argument("--dev-subsets", nargs="+", default=["dev-other"], metavar="SUBSET",
                   help="with LibriSpeech: the unlabelled audio the selection metric reads (default dev-other)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 2 for a bad command line, input or cached stage, 1 for a failed run, 0 on success."""
    import dataclasses
    import shutil

    from . import paths
    from .cli import load_split, parse_data_spec, run_command
    from .data.librispeech import read_librispeech
    from .data.manifest import read_manifest, read_unpaired_text
    from .unpaired import read_sentences
    from .recipes import ctc_recipe, recipe

    parser = build_arg_parser()
    args = parser.parse_args(argv)

    def body(info) -> int:
        scale = args.scale or paths.scale()
        synth = parse_data_spec(args.data)[0] == "synth"
        if synth and args.text is not None:
            raise ConfigError(f"--text: the synthetic corpus brings its unpaired text; found --text {args.text}")
        if not synth and args.text is None:
            raise ConfigError("--text: LibriSpeech has no unpaired text; expected a text file of sentences, one per "
                              "line (the paper's librispeech-lm-norm.txt), found none")
        text = None if synth else read_sentences(args.text)  # read first: a missing file fails before any work
        plan = PLANS[scale]
        train = dict(plan.train, **({"max_updates": args.max_updates} if args.max_updates else {}))
        plan = dataclasses.replace(plan, layer=plan.layer if args.layer is None else args.layer,
                                   num_clusters=args.num_clusters or plan.num_clusters,
                                   pca_dim=args.pca_dim or plan.pca_dim, train=train,
                                   seeds=tuple(args.seeds or plan.seeds))
        plan = dataclasses.replace(plan, gan={**plan.gan, "input_dim": plan.pca_dim})
        folder = Path(args.out or paths.runs_dir() / f"wav2vec-u-{scale}")
        if args.overwrite and folder.exists():
            shutil.rmtree(folder)
        if args.model == "mfcc":
            featurize, source = mfcc_source()
        else:
            featurize, source = layer_source(load_feature_model(args.model), plan.layer)
        self_training = args.model != "mfcc" and not args.no_self_training
        if self_training:                                    # a model the fine-tuning cannot take: refused now
            from .checkpoint import CheckpointError
            from .finetune import PHONE_VOCAB

            try:
                ctc_recipe("finetune", scale, args.model).build(vocab=PHONE_VOCAB, pretrained=args.model)
            except (ConfigError, CheckpointError) as e:
                raise ConfigError(f"self-training (stage 6) cannot fine-tune --model {args.model} with the "
                                  f"{scale} CTC recipe: {e}; pass --no-self-training to stop before it") from None
        splits, root, _ = load_split(recipe("hubert", scale), args.data, args.subsets, "pretrain", info,
                                     audio_ext=args.audio_ext)
        if synth:
            dev, test, text = read_manifest(root, "dev"), read_manifest(root, "test"), read_unpaired_text(root)
        else:                                                # letters only: no phone PER, no test split to score
            dev = read_librispeech(root, args.dev_subsets, audio_ext=args.audio_ext)
            test = []
        train_utts = [u for _, us in splits for u in us]
        stages = Stages(folder, root, train_utts, dev, text, featurize, source, plan, test=test)
        seg = stages.segments()
        print(f"segments: {sum(len(s) for s in seg['train']) / len(seg['train']):.1f} per utterance, "
              f"PCA keeps {seg['explained']:.1%} of the variance", flush=True)
        shown = set()

        def show(h):
            shown.add((h["seed"], h["update"]))
            print(f"seed {h['seed']} update {h['update']}: LM PPL {h['lm_ppl']:.1f}, usage {h['usage']:.2f}, weighted "
                  f"{h['weighted_lm_ppl']:.1f}" + (f", dev PER {h['dev_per']:.3f}" if h["dev_per"] is not None else ""),
                  flush=True)

        histories = [stages.gan(s, on_eval=show) for s in plan.seeds]
        for h in (h for hs in histories for h in hs if (h["seed"], h["update"]) not in shown):
            show(h)                                          # evaluations of a finished run, read from its file
        best = stages.select(histories)
        print(f"selected: seed {best['seed']} update {best['update']} (weighted_lm_ppl "
              f"{best['weighted_lm_ppl']:.1f})" + (f", dev PER {best['dev_per']:.3f}" if best["dev_per"] is not None
                                                    else "") + f"; in {folder}")
        per = stages.score(best, "test")[0] if test else None
        if per is not None:
            print(f"test PER of the selected generator: {per:.3f}")
        base = stages.baselines()
        if base is not None:
            print(f"dev PER of the references: majority phone ({base['majority_phone']}) {base['majority']:.3f}, "
                  f"the LM alone {base['lm_alone']:.3f}, supervised ceiling {base['supervised_ceiling']:.3f}")
        if self_training:
            from .self_training import self_train

            st = self_train(stages, best, args.model, scale=scale)
            print(f"self-training: {args.model} fine-tuned with CTC for {st['updates']} updates on the selected "
                  f"generator's transcripts" + (f" (their PER {st['labels']:.3f})" if st["labels"] is not None else "")
                  + (f"; test PER {st['test']:.3f}" if st["test"] is not None else "")
                  + f"; in {folder / 'self-training'}")
        return 0

    return run_command(parser.prog, body, scale=lambda: args.scale or paths.scale())


if __name__ == "__main__":
    sys.exit(main())
