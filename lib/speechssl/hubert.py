"""HuBERT's iterations: a teacher's features -> k-means -> frame labels -> pre-training (paper Sec. II-C,
IV-B; fairseq ``examples/hubert/simple_kmeans`` and ``config/pretrain``).

    python -m speechssl.hubert --scale tiny --iteration 1             # MFCC k-means, K = 100, then train
    python -m speechssl.hubert --scale tiny --iteration 2 --layer 2   # k-means on layer 2 of iteration 1
    torchrun --nproc_per_node=8 -m speechssl.hubert --scale full --iteration 2 --layer 6 \\
        --data librispeech:/data --subsets train-clean-100 train-clean-360 train-other-500

Each iteration runs four stages, each cached in the iteration's folder (``runs/hubert-<scale>/iter<N>``)
and skipped when its output is there:

1. **features** (``features.pt``): the teacher's frames on a random share of the utterances (fairseq
   ``learn_kmeans.py --percent``): 39-dim MFCC at 100 Hz in iteration 1, the output of one Transformer
   layer of the previous iteration's model at 50 Hz later (the paper's BASE: layer 6 of 12);
2. **k-means** (``kmeans.pt``): :class:`~speechssl.cluster.KMeans` with fairseq's options;
3. **labels** (``labels.npz``): every utterance's frames assigned to the nearest centre, stored with the
   fingerprint of the corpus and of the teacher (features, layer, ``K``, centres) by
   :class:`~speechssl.units.UnitLabels`;
4. **training** (``model/``): the ``hubert`` recipe of the scale, from scratch, on these labels; an
   interrupted run resumes exactly.

A stage's output made from another corpus or teacher than the one asked for is refused, naming both
fingerprints; ``--overwrite`` makes every stage again. Under ``torchrun`` the main process runs the
first three stages while the others wait, then every process trains.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import paths
from .checkpoint import load_checkpoint, normalizes_input, save_checkpoint
from .cluster import ALGORITHMS, LLOYD_OPTIONS, KMeans
from .data.audio import load_audio
from .engine import drop_short_utterances, make_train_dataset, seed_everything
from .errors import ConfigError
from .features import mfcc
from .frames import MFCC_FRAMES, MODEL_FRAMES, FrameGrid
from .metrics import UnitQuality, unit_quality
from .models.encoder import MaskedEncoder
from .models.hubert import Hubert, HubertConfig
from .recipes import Recipe, recipe
from .run import Run, start_run
from .units import LabelError, UnitLabels, fingerprint

__all__ = ["ITERATIONS", "Iteration", "IterationPlan", "TeacherQuality", "cluster_quality", "iterations",
           "layer_featurizer", "load_encoder", "load_hubert", "main", "teacher_frames"]


@dataclass(frozen=True)
class IterationPlan:
    """What an iteration's teacher is: ``layer`` of the previous model (``None``: MFCC), ``num_classes``
    (K), the ``share`` of utterances k-means is fitted on, and the iteration's number of updates."""

    layer: int | None
    num_classes: int
    share: float
    max_steps: int


#: The iterations of each scale. ``full``: the paper's BASE (Sec. IV-B/IV-C): MFCC K = 100 on all of
#: the 960 h and 250k updates, then layer 6 of iteration 1 with K = 500 fitted on 10% of the data
#: (``simple_kmeans`` README) and 400k updates. ``tiny``: K = 100 in both (24 minutes of audio give
#: about 140 frames per cluster at K = 500), all of the audio, the recipe's 600 updates, and layer 0 (the
#: Transformer's input), which clustered best on the pre-training split in chapter 5's layer sweep (k-means
#: PNMI 0.385 against 0.378 to 0.362 for layers 1 to 4); ``reduced``: the middle of its 6 layers and half of
#: the utterances, as the paper's layer 6 of 12 (not yet measured at that scale).
ITERATIONS: dict[str, dict[int, IterationPlan]] = {
    "full": {1: IterationPlan(None, 100, 1.0, 250_000), 2: IterationPlan(6, 500, 0.1, 400_000)},
    "reduced": {1: IterationPlan(None, 100, 1.0, 40_000), 2: IterationPlan(3, 500, 0.5, 40_000)},
    "tiny": {1: IterationPlan(None, 100, 1.0, 600), 2: IterationPlan(0, 100, 1.0, 600)},
}


# -- teachers ---------------------------------------------------------------------------------------

def load_encoder(path: str | os.PathLike, names: Sequence[str] = ("hubert", "wav2vec2"), *,
                 purpose: str = "read the layer features", argument: str = "--model") -> MaskedEncoder:
    """The pre-trained HuBERT or wav2vec 2.0 (``names``: the kinds accepted) of a run folder or checkpoint,
    rebuilt from the configuration stored with it, in eval mode; a checkpoint of another model is refused
    with ``argument``'s name. Its ``normalize_waveform`` says whether it was pre-trained on standardised
    waveforms (:func:`~speechssl.checkpoint.normalizes_input`), which :func:`layer_featurizer` then gives it."""
    from .models import Wav2Vec2, Wav2Vec2Config

    state = load_checkpoint(path, purpose=purpose)
    kinds = {"hubert": (Hubert, HubertConfig), "wav2vec2": (Wav2Vec2, Wav2Vec2Config)}
    if state["model_name"] not in names:
        raise ConfigError(f"{argument} {path}: expected a checkpoint of {' or '.join(names)}, found one of "
                          f"{state['model_name']!r}")
    model_cls, config_cls = kinds[state["model_name"]]
    model = model_cls(config_cls(**state["model_config"]))
    model.load_state_dict(state["model"])
    model.normalize_waveform = normalizes_input(state)
    return model.eval()


def load_hubert(path: str | os.PathLike, purpose: str = "load the previous iteration's model") -> Hubert:
    """The HuBERT model of a run folder or checkpoint (the teacher of the next iteration)."""
    return load_encoder(path, ("hubert",), purpose=purpose, argument="--teacher")


def _check_layer(model: MaskedEncoder, layer: object) -> None:
    n = model.cfg.num_layers
    if not (isinstance(layer, int) and 0 <= layer <= n):
        raise ConfigError(f"--layer: expected a Transformer layer from 0 to {n} (the model has {n} layers), "
                          f"found {layer!r}")


def layer_featurizer(model: MaskedEncoder, layer: int | Sequence[int], device: torch.device | str | None = None
                     ) -> Callable[[torch.Tensor], torch.Tensor | dict[int, torch.Tensor]]:
    """``waveform (T,) -> (T', D)``: the output of Transformer layer ``layer`` of a HuBERT or wav2vec 2.0 (0: the
    input of the first layer, the projected features after the positional convolution; fairseq's
    ``output_layer`` counts from 1 the same way), unmasked, in eval mode. With a list of layers, one pass
    gives ``{layer: (T', D)}``. A model whose ``normalize_waveform`` is true (:func:`load_encoder`) reads each
    waveform standardised first, as fairseq's ``wav2vec_extract_features.py`` gives it when the task normalises."""
    layers = [layer] if isinstance(layer, int) else list(layer)
    for i in layers:
        _check_layer(model, i)
    device = device or next(model.parameters()).device
    normalize = getattr(model, "normalize_waveform", False)

    @torch.no_grad()
    def featurize(wav: torch.Tensor):
        if normalize:
            wav = F.layer_norm(wav, wav.shape)
        was_training = model.training
        model.eval()
        try:
            out = model(wav[None].to(device), return_hidden_states=True, num_layers=max(max(layers), 1))
        finally:
            model.train(was_training)
        found = {i: out.hidden_states[i][0].float().cpu() for i in layers}
        return found[layer] if isinstance(layer, int) else found

    return featurize


def teacher_frames(featurize: Callable[[torch.Tensor], torch.Tensor], utterances: Sequence,
                   root: str | os.PathLike) -> list[torch.Tensor]:
    """The teacher's frames of every utterance, one ``(F, D)`` tensor each."""
    with torch.no_grad():
        return [featurize(load_audio(Path(root) / u.path)) for u in utterances]


@dataclass(frozen=True)
class TeacherQuality:
    """How phone-like the k-means units of one kind of frames are: on the frames k-means was fitted on
    (``fit``, which chooses a layer without looking at held-out speakers) and on held-out ones (``eval``)."""

    name: object
    fit: UnitQuality
    eval: UnitQuality
    kmeans: KMeans


def cluster_quality(fit_frames: dict, fit_phones: torch.Tensor, eval_frames: dict, eval_phones: torch.Tensor, *,
                    num_classes: int, num_phones: int, n_init: int = 3, seed: int = 0) -> list[TeacherQuality]:
    """k-means with ``num_classes`` units on each kind of frames in ``fit_frames`` (``{name: (N, D)}``, e.g.
    MFCC and every layer of a model, from :func:`~speechssl.probe.collect_frames`), and the phone purity,
    cluster purity and PNMI of its units (fairseq ``measure_teacher_quality.py``) on both frame sets."""
    out = []
    for name, x in fit_frames.items():
        km = KMeans(num_classes, n_init=n_init, seed=seed, progress=False).fit(x.float())
        out.append(TeacherQuality(
            name, unit_quality(np.asarray(fit_phones), km.predict(x.float()), num_phones, num_classes),
            unit_quality(np.asarray(eval_phones), km.predict(eval_frames[name].float()), num_phones, num_classes), km))
    return out


def _weights_fingerprint(model: torch.nn.Module) -> str:
    return fingerprint(*[t.detach().cpu().numpy() for _, t in sorted(model.state_dict().items())])


# -- an iteration -------------------------------------------------------------------------------------

class Iteration:
    """One HuBERT iteration over ``utterances`` of the corpus at ``root``, cached in ``folder``.

    ``teacher``: ``None`` for MFCC (iteration 1), else the previous iteration's :class:`Hubert`, read
    at ``layer``. ``r`` is the ``hubert`` recipe to train (its ``num_classes`` and ``label_rate`` are set
    here from ``num_classes`` and the teacher's frame rate). ``kmeans``: ``"minibatch"`` (the paper's
    and fairseq's ``learn_kmeans.py``: scikit-learn's ``MiniBatchKMeans``, 20 k-means++ starts) or
    ``"lloyd"`` (:data:`~speechssl.cluster.LLOYD_OPTIONS`: one k-means++ start, then at most 25 full passes;
    a lower inertia in less time, ``bench/RESULTS.md``).
    """

    def __init__(self, folder: str | os.PathLike, utterances: Sequence, root: str | os.PathLike, *,
                 num_classes: int, teacher: Hubert | None = None, layer: int | None = None, share: float = 1.0,
                 seed: int = 0, n_init: int = 20, device: str | torch.device | None = "auto",
                 kmeans: str = "minibatch") -> None:
        if (teacher is None) != (layer is None):
            raise ConfigError("--layer: a teacher model and a layer go together (iteration 1 reads MFCC and takes "
                              f"no layer), found layer={layer!r} and {'a' if teacher is not None else 'no'} model")
        if not 0.0 < share <= 1.0:
            raise ConfigError(f"--share: expected the share of utterances k-means is fitted on in (0, 1], found {share}")
        if num_classes < 1:
            raise ConfigError(f"--num-classes: expected K >= 1, found {num_classes}")
        if kmeans not in ALGORITHMS:
            raise ConfigError(f"--kmeans: expected one of {', '.join(ALGORITHMS)}, found {kmeans!r}")
        self.algorithm = kmeans
        self.folder = Path(folder)
        self.utterances = list(utterances)
        self.root = Path(root)
        self.num_classes, self.share, self.seed, self.n_init, self.device = num_classes, share, seed, n_init, device
        self.teacher, self.layer = teacher, layer
        if teacher is None:
            self.featurize = lambda wav: mfcc(wav)
            self.grid: FrameGrid = MFCC_FRAMES
            self.source = fingerprint("mfcc-39")
        else:
            self.featurize = layer_featurizer(teacher, layer)
            self.grid = MODEL_FRAMES
            self.source = fingerprint("hubert-layer", layer, _weights_fingerprint(teacher))
        self.corpus = fingerprint(sorted((u.id, u.num_samples) for u in self.utterances))

    # -- stage 1: the teacher's frames on a share of the utterances ----------------------------------
    def fit_utterances(self) -> list:
        """The random share of utterances k-means is fitted on (fairseq ``--percent``), in corpus order."""
        n = max(1, math.ceil(self.share * len(self.utterances)))
        pick = np.random.default_rng(self.seed).choice(len(self.utterances), n, replace=False)
        return [self.utterances[i] for i in sorted(pick)]

    def features(self) -> torch.Tensor:
        """``(N, D)`` teacher frames of :meth:`fit_utterances` (cached in ``features.pt``)."""
        path, key = self.folder / "features.pt", fingerprint(self.source, self.corpus, self.share, self.seed)
        cached = self._cached(path, key, "features")
        if cached is not None:
            return cached["frames"]
        frames = torch.cat(teacher_frames(self.featurize, self.fit_utterances(), self.root))
        save_checkpoint(path, {"key": key, "frames": frames})
        return frames

    # -- stage 2: k-means ------------------------------------------------------------------------------
    def kmeans(self) -> KMeans:
        """The fitted k-means (cached in ``kmeans.pt``)."""
        path = self.folder / "kmeans.pt"
        lloyd = self.algorithm == "lloyd"
        key = fingerprint(self.source, self.corpus, self.share, self.seed, self.num_classes, self.n_init,
                          *(["lloyd"] if lloyd else []))
        km = KMeans(self.num_classes, seed=self.seed, device=self.device,
                    **(LLOYD_OPTIONS if lloyd else {"n_init": self.n_init}))
        cached = self._cached(path, key, "k-means")
        if cached is not None:
            km.cluster_centers_ = cached["centers"].to(km.device)
            return km
        x = self.features()
        if x.shape[0] < self.num_classes:
            raise ConfigError(f"--num-classes: k-means needs at least K={self.num_classes} frames, the teacher gave "
                              f"{x.shape[0]} on {len(self.fit_utterances())} utterances; use a smaller K or a "
                              f"larger --share")
        km.fit(x)
        save_checkpoint(path, {"key": key, "centers": km.cluster_centers_.cpu()})
        return km

    @property
    def teacher_fingerprint(self) -> str:
        """What made the labels: the teacher's features (and model), ``K`` and the centres."""
        return fingerprint(self.source, self.num_classes, self.kmeans().cluster_centers_.cpu().numpy())

    # -- stage 3: labels ---------------------------------------------------------------------------------
    def labels(self) -> UnitLabels:
        """Every utterance's frame labels (cached in ``labels.npz``, refused if another corpus or teacher made them)."""
        path = self.folder / "labels.npz"
        teacher = self.teacher_fingerprint
        if path.is_file():
            try:
                labels = UnitLabels.load(path, corpus=self.corpus, teacher=teacher)
            except LabelError as e:
                raise LabelError(f"{e}; or pass --overwrite to make every stage again") from None
            labels.check(self.utterances)
            return labels
        km = self.kmeans()
        frames = teacher_frames(self.featurize, self.utterances, self.root)
        out = UnitLabels({u.id: km.predict(f) for u, f in zip(self.utterances, frames)}, self.num_classes,
                         int(self.grid.rate), self.corpus, teacher)
        out.check(self.utterances)
        out.save(path)
        return out

    # -- stage 4: pre-training ---------------------------------------------------------------------------
    def recipe(self, scale: str, **overrides) -> Recipe:
        """The scale's ``hubert`` recipe for these labels, its run in ``model/``."""
        return recipe("hubert", scale, **{"num_classes": (self.num_classes,), "label_rate": int(self.grid.rate),
                                          "out_dir": str(self.folder / "model"), "seed": self.seed, **overrides})

    def start(self, r: Recipe) -> Run:
        """A fresh model of ``r`` and its trainer, on the labels (checked against this corpus and teacher)."""
        labels = self.labels()
        if r.model.num_classes != (labels.num_classes,) or r.model.label_rate != labels.rate:
            raise LabelError(f"labels: the recipe expects K={r.model.num_classes} at {r.model.label_rate} Hz, the "
                             f"labels have K={labels.num_classes} at {labels.rate} Hz")
        seed_everything(r.train.seed)
        model = r.build()
        kept = drop_short_utterances(self.utterances, model.min_input_samples, what="HuBERT training set")
        dataset = make_train_dataset(r.train, kept, self.root, frame_labels=labels.labels, frames=self.grid)
        return start_run(r, kept, self.root, model=model, dataset=dataset)

    def _cached(self, path: Path, key: str, what: str) -> dict | None:
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated zip, a pickle error: the file was damaged after it was written
            raise LabelError(f"{path}: cannot read these {what}: the file is truncated or corrupt ({type(e).__name__}); "
                             f"delete it to make this stage again, or pass --overwrite") from None
        found = state.get("key") if isinstance(state, dict) else None
        if found != key:
            raise LabelError(f"{path}: these {what} were made from another corpus or teacher (fingerprint "
                             f"{found}, expected {key}); pass --overwrite to make every stage again, or "
                             f"use another --out")
        return state


def iterations(scale: str, utterances: Sequence, root: str | os.PathLike, *, upto: int = 2, seed: int = 0,
               fit: Callable[[Run], Run] | None = None) -> dict[int, Run]:
    """HuBERT's iterations 1 to ``upto`` with the scale's defaults (:data:`ITERATIONS`), in
    ``runs/hubert-<scale>/iter<N>``: each cached stage and finished run is reused, a missing one made.
    ``fit`` trains a run (default: continue it if there is one)."""
    fit = fit or (lambda run: (run.fit(resume="auto"), run)[1])
    plans, runs, teacher = ITERATIONS[scale], {}, None
    for n in range(1, upto + 1):
        plan = plans.get(n, plans[max(plans)])
        it = Iteration(paths.runs_dir() / f"hubert-{scale}" / f"iter{n}", utterances, root, teacher=teacher,
                       layer=None if teacher is None else plan.layer, num_classes=plan.num_classes, share=plan.share,
                       seed=seed)
        runs[n] = fit(it.start(it.recipe(scale, max_steps=plan.max_steps)))
        teacher = runs[n].model
    return runs


# -- the command --------------------------------------------------------------------------------------

def build_arg_parser() -> argparse.ArgumentParser:
    from .cli import add_data_options, add_run_options

    p = argparse.ArgumentParser(prog="python -m speechssl.hubert", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iteration", type=int, default=1, help="1 (default): MFCC k-means; 2 or more: a layer of "
                                                             "the previous iteration's model")
    p.add_argument("--layer", type=int, default=None, help="Transformer layer of the previous model (0: its "
                                                           "input); default: the scale's")
    p.add_argument("--num-classes", type=int, default=None, help="K of the k-means; default: the scale's")
    p.add_argument("--share", type=float, default=None, help="share of the utterances k-means is fitted on")
    p.add_argument("--kmeans", choices=ALGORITHMS, default="minibatch",
                   help="minibatch (default: the paper's and fairseq's, 20 k-means++ starts) or lloyd (one start, "
                        "then full passes: a lower inertia in less time, bench/RESULTS.md)")
    p.add_argument("--teacher", default=None, help="run folder or checkpoint of the previous iteration "
                                                   "(default: <runs_dir>/hubert-<scale>/iter<N-1>/model)")
    add_data_options(p, split="pretrain")
    add_run_options(p, default_out="<runs_dir>/hubert-<scale>/iter<N>")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 2 for a bad command line, configuration or label file, 1 for a failed run, 0 on success."""
    from .checkpoint import check_run_folder
    from .cli import check_run_data, load_split, recipe_overrides, run_command
    from .engine.distributed import main_process_first

    parser = build_arg_parser()
    args = parser.parse_args(argv)

    def body(info) -> int:
        scale = args.scale or paths.scale()
        plans = ITERATIONS[scale]
        if args.iteration < 1:
            raise ConfigError(f"--iteration: expected 1 or more, found {args.iteration}")
        plan = plans.get(args.iteration, plans[max(plans)])
        overrides = recipe_overrides(args)
        folder = Path(overrides.pop("out_dir", None) or paths.runs_dir() / f"hubert-{scale}" / f"iter{args.iteration}")
        check_run_folder(folder)
        if args.overwrite and info.is_main and folder.exists():
            shutil.rmtree(folder)
        teacher = layer = None
        if args.iteration > 1:
            source = args.teacher or folder.parent / f"iter{args.iteration - 1}" / "model"
            teacher = load_hubert(source)
            layer = plan.layer if args.layer is None else args.layer
        elif args.layer is not None or args.teacher is not None:
            raise ConfigError("--layer/--teacher: iteration 1 clusters MFCC frames and takes no model layer")
        r0 = recipe("hubert", scale)
        splits, root, _ = load_split(r0, args.data, args.subsets, "pretrain", info, audio_ext=args.audio_ext)
        it = Iteration(folder, [u for _, utts in splits for u in utts], root, teacher=teacher, layer=layer,
                       num_classes=args.num_classes or plan.num_classes, share=args.share or plan.share,
                       seed=overrides.get("seed", 0), kmeans=args.kmeans)
        main_process_first(info, it.labels)           # stages 1-3 on the main process, then read by the others
        r = it.recipe(scale, **{"max_steps": plan.max_steps, **overrides})
        if info.is_main:
            check_run_data(Path(r.train.out_dir), args.data, args.subsets, args.resume, args.overwrite)
        run = it.start(r)
        history = run.fit(resume=args.resume, overwrite=args.overwrite)
        if info.is_main:
            last = history[-1] if history else {}
            print(f"hubert iteration {args.iteration} ({scale}): {run.trainer.step} updates, masked accuracy "
                  f"{last.get('acc_m')}, loss {last.get('loss')}; labels and model in {folder}")
        return 0

    return run_command(parser.prog, body, scale=lambda: args.scale or paths.scale())


if __name__ == "__main__":
    sys.exit(main())
