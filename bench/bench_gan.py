"""wav2vec-U's GAN: updates per second, and our JOIN against a per-utterance loop as fairseq writes it.

JOIN merges runs of equal argmax in the generator's output and, in training, keeps one random output per
run. fairseq's ``JoinSegmenter`` does it with a Python loop over the utterances of the batch
(``unique_consecutive`` per row, then one indexing per row); ours builds one (run x output) selection
matrix for the batch and multiplies. The reference below is that loop, written for this benchmark. Both run
forward and backward on the same logits; the ratio is reference time / our time (above 1: ours faster),
the median of repeated runs taken in turns.

Then the discriminator's convolutions: :class:`~speechssl.models.wav2vec_u.TimeConv` (one matrix product
over the shifted copies of the input) against ``nn.Conv1d`` with the same weights, through what a
discriminator step asks of them (forward, and the gradient penalty's gradient of a gradient), on the
kernel path of the process (``speechssl.kernels``: run it in the environment that
``python -m speechssl.kernels`` prints, with ``--pinned``, to measure the book's path).

Then whole updates of :func:`speechssl.gan.train_gan` (a discriminator and a generator step, alternating)
on random data with the book's tiny sizes and with the paper's (``w2vu.yaml``: 512-dimensional input,
discriminator 384 wide, batch 160), as updates per second.

    python bench/bench_gan.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from speechssl import kernels
from speechssl.gan import GanData, GanTrainConfig, train_gan
from speechssl.models.wav2vec_u import GanConfig, TimeConv, Wav2VecU, join_runs
from speechssl.wav2vec_u import pad_sequences


def join_loop(logits: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """JOIN in training mode, one utterance at a time (fairseq ``JoinSegmenter.logit_segment``'s algorithm)."""
    b, t, v = logits.shape
    preds = logits.detach().argmax(-1)
    rows = []
    for i in range(b):
        _, counts = preds[i, :lengths[i]].unique_consecutive(return_counts=True)
        starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
        pick = starts + (counts * torch.rand(len(counts))).long()
        rows.append(logits[i, pick])
    out, n = pad_sequences(rows)
    return out, n


def time_it(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_turns(ours, reference, repeats: int) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``reference``, after one warm-up call each, over 3 rounds taken in turns."""
    ours(), reference()
    t_ours, t_ref = [], []
    for _ in range(3):
        t_ours.append(time_it(ours, repeats))
        t_ref.append(time_it(reference, repeats))
    return statistics.median(t_ours), statistics.median(t_ref)


def random_data(n_audio: int, n_text: int, dim: int, num_phones: int, seed: int = 0) -> GanData:
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(int(n), dim, generator=g) for n in torch.randint(20, 90, (n_audio,), generator=g)]
    text = [torch.randint(0, num_phones, (int(n),), generator=g) for n in torch.randint(20, 118, (n_text,), generator=g)]
    return GanData(*pad_sequences(feats), *pad_sequences(text))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--pinned", action="store_true", help="switch oneDNN off as the book's tiny runs do")
    args = ap.parse_args()
    if args.pinned:
        kernels.pin()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, pinned kernel path: {kernels.pinned()}, "
          f"oneDNN {'on' if torch.backends.mkldnn.enabled else 'off'}")
    for batch in (64, 160):
        logits = torch.randn(batch, 60, 40) * 0.3                     # near-uniform: runs of 1-2 outputs
        logits = logits.requires_grad_(True)
        lengths = torch.randint(30, 61, (batch,))
        lengths[0] = 60

        def ours():
            out, _ = join_runs(logits, lengths, sample=True)
            out.sum().backward()

        def loop():
            out, _ = join_loop(logits, lengths)
            out.sum().backward()

        a, b = in_turns(ours, loop, args.repeats)
        print(f"JOIN, batch {batch} x 60 outputs, forward + backward: ours {a * 1e3:.2f} ms, "
              f"per-utterance loop {b * 1e3:.2f} ms, ratio {b / a:.2f}")
    for disc, batch in ((16, 32), (384, 160)):
        convs = [TimeConv(40, disc, 6, 5, 0), TimeConv(disc, disc, 6, 5, 0), TimeConv(disc, 1, 6, 5, 0)]
        x = torch.randn(batch, 60, 40).softmax(-1).requires_grad_(True)

        def penalty(layer):
            def step():
                y = x
                for i, conv in enumerate(convs):
                    y = layer(conv, y)
                    if i == 1:
                        y = torch.nn.functional.gelu(y)
                g, = torch.autograd.grad(y.sum(), x, create_graph=True)
                ((g.norm(2, dim=1) - 1) ** 2).sum().backward()
            return step

        ours = penalty(lambda conv, y: conv(y))
        plain = penalty(lambda conv, y: torch.nn.Conv1d.forward(conv, torch.nn.functional.pad(
            y.transpose(1, 2), (conv.left, conv.right))).transpose(1, 2))
        a, b = in_turns(ours, plain, args.repeats)
        print(f"discriminator {disc} wide, kernel 6, batch {batch} x 60, with the penalty's double backward: "
              f"TimeConv {a * 1e3:.2f} ms, nn.Conv1d {b * 1e3:.2f} ms, ratio {b / a:.2f}")
    for name, dim, disc, batch in (("tiny", 64, 32, 64), ("paper (w2vu.yaml)", 512, 384, 160)):
        data = random_data(400, 2000, dim, 40)
        model = Wav2VecU(GanConfig(input_dim=dim, num_phones=40, discriminator_dim=disc))
        cfg = GanTrainConfig(batch_size=batch, max_updates=args.updates if name == "tiny" else max(args.updates // 10, 10))
        start = time.perf_counter()
        train_gan(model, data, cfg)
        dt = time.perf_counter() - start
        print(f"{name}: input {dim}, discriminator {disc}, batch {batch}: {cfg.max_updates / dt:.1f} updates/s "
              f"({dt / cfg.max_updates * 1e3:.1f} ms per update)")


if __name__ == "__main__":
    main()
