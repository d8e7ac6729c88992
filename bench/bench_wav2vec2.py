"""Training-step throughput of our wav2vec 2.0 BASE against torchaudio's, side by side.

Both sides run the same batch through a full pre-training step (forward, backward): the
reference is torchaudio's ``wav2vec2_base`` encoder (feature extractor, feature projection,
Transformer) with our masking, quantizer and loss attached, so the only difference is the
encoder implementation. Prints audio-seconds per second for each and their ratio (ours /
torchaudio; above 1 means ours is faster), as the median over repeated steps.

    python bench/bench_wav2vec2.py                        # CPU, 2 x 4 s, fp32
    python bench/bench_wav2vec2.py --device cuda --batch 8 --seconds 15.6 --precision bf16
    python bench/bench_wav2vec2.py --device cuda --compile  # torch.compile on both sides
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
import torchaudio

from speechssl.interop import from_torchaudio, load_pretrained
from speechssl.models.wav2vec2 import Wav2Vec2, Wav2Vec2Config, Wav2Vec2Output


class TorchaudioEncoder(torch.nn.Module):
    """torchaudio's encoder with our pre-training head (mask vector, quantizer, projections, loss)."""

    def __init__(self, head: Wav2Vec2) -> None:
        super().__init__()
        self.ta = torchaudio.models.wav2vec2_base(encoder_layer_drop=head.cfg.layer_drop)
        self.head = head

    def compute_loss(self, batch, num_updates=0):
        audio, lengths = batch["audio"], batch["lengths"]
        feats, frames = self.ta.feature_extractor(audio, lengths)                # (B, T, C)
        normed = self.ta.encoder.feature_projection.layer_norm(feats)
        x = self.ta.encoder.feature_projection.dropout(self.ta.encoder.feature_projection.projection(normed))
        x, m = self.head.apply_mask(x, frames)
        x = self.ta.encoder.transformer(x)
        out = Wav2Vec2Output(x=x, features=normed, lengths=frames, mask=m, features_pen=feats.float().pow(2).mean())
        return self.head.pretraining_loss(out, num_updates)


def measure(model, batch, steps: int, warmup: int, precision: str, device: torch.device) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" and device.type == "cuda"
           else nullcontext())
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with amp:
            loss, _ = model.compute_loss(batch, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    n = int(args.seconds * 16_000)
    batch = {"audio": torch.randn(args.batch, n, device=device),
             "lengths": torch.full((args.batch,), n, dtype=torch.int64, device=device)}
    ours = Wav2Vec2(Wav2Vec2Config.preset("base")).to(device).train()
    ref = TorchaudioEncoder(Wav2Vec2(Wav2Vec2Config.preset("base"))).to(device).train()
    # same weights on both sides (the reference's head is a separate copy of ours)
    load_pretrained(ours, from_torchaudio(ref.ta.state_dict(), "group_norm"))
    ref.head.load_state_dict(ours.state_dict())
    if args.compile:
        ours.compute_loss = torch.compile(ours.compute_loss)
        ref.compute_loss = torch.compile(ref.compute_loss)
    audio_s = args.batch * args.seconds
    results = {}
    # interleave the two sides so that drifting machine load affects both alike
    for rnd in range(2):
        for name, model in (("ours", ours), ("torchaudio", ref)):
            t = measure(model, batch, args.steps, args.warmup if rnd == 0 else 1, args.precision, device)
            results.setdefault(name, []).extend(t)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"device={device}, batch={args.batch} x {args.seconds} s, precision={args.precision}, "
          f"compile={args.compile}, threads={torch.get_num_threads()}")
    for name in ("ours", "torchaudio"):
        print(f"{name:>10}: {med[name]:.3f} s/step, {audio_s / med[name]:.1f} audio-s/s "
              f"({len(results[name])} steps)")
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"ratio (ours / torchaudio throughput): {med['torchaudio'] / med['ours']:.2f}")


if __name__ == "__main__":
    main()
