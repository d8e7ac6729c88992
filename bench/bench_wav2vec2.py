"""Training-step throughput of our wav2vec 2.0 BASE against torchaudio's, side by side.

Both sides run the same batch through a full pre-training step (forward, backward, AdamW): the
reference is torchaudio's encoder (feature extractor, feature projection, Transformer; for BASE,
``wav2vec2_base`` with our dropouts) with our masking, quantizer and loss attached, so the only
difference is the encoder implementation. Prints audio-seconds per second for each and their ratio
(ours / torchaudio; above 1 means ours is faster), as the median over repeated steps, and each
side's peak CUDA memory. ``bench/gpu_check.py`` measures the same step with these functions.

    python bench/bench_wav2vec2.py                        # CPU, 2 x 4 s, fp32
    python bench/bench_wav2vec2.py --device cuda --batch 8 --seconds 15.6 --precision bf16
    python bench/bench_wav2vec2.py --device cuda --compile  # torch.compile on both sides
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torchaudio
from torch import nn

from speechssl.interop import from_torchaudio, load_pretrained
from speechssl.models.wav2vec2 import Wav2Vec2, Wav2Vec2Config, Wav2Vec2Output


def torchaudio_model(cfg: Wav2Vec2Config) -> torchaudio.models.Wav2Vec2Model:
    """torchaudio's encoder with the architecture and dropouts of ``cfg`` (the fairseq -> torchaudio
    mapping of torchaudio's own fairseq importer)."""
    return torchaudio.models.wav2vec2_model(
        extractor_mode=cfg.extractor_mode, extractor_conv_layer_config=list(cfg.conv_layers),
        extractor_conv_bias=cfg.conv_bias, encoder_embed_dim=cfg.embed_dim,
        encoder_projection_dropout=cfg.dropout_input, encoder_pos_conv_kernel=cfg.conv_pos,
        encoder_pos_conv_groups=cfg.conv_pos_groups, encoder_num_layers=cfg.num_layers,
        encoder_num_heads=cfg.num_heads, encoder_attention_dropout=cfg.attention_dropout,
        encoder_ff_interm_features=cfg.ffn_dim, encoder_ff_interm_dropout=cfg.activation_dropout,
        encoder_dropout=cfg.dropout, encoder_layer_norm_first=cfg.layer_norm_first,
        encoder_layer_drop=cfg.layer_drop, aux_num_out=None)


class TorchaudioEncoder(nn.Module):
    """torchaudio's encoder with our pre-training head (mask vector, quantizer, projections, loss)."""

    def __init__(self, head: Wav2Vec2) -> None:
        super().__init__()
        self.ta = torchaudio_model(head.cfg)
        self.head = head

    def compute_loss(self, batch: Mapping[str, torch.Tensor], num_updates: int = 0):
        audio, lengths = batch["audio"], batch["lengths"]
        feats, frames = self.ta.feature_extractor(audio, lengths)                # (B, T, C)
        normed = self.ta.encoder.feature_projection.layer_norm(feats)
        x = self.ta.encoder.feature_projection.dropout(self.ta.encoder.feature_projection.projection(normed))
        x, m = self.head.apply_mask(x, frames)
        x = self.ta.encoder.transformer(x)
        out = Wav2Vec2Output(x=x, features=normed, lengths=frames, mask=m, features_pen=feats.float().pow(2).mean())
        return self.head.pretraining_loss(out, num_updates)


def make_pair(cfg: Wav2Vec2Config, device: torch.device) -> dict[str, nn.Module]:
    """``{"ours": ..., "torchaudio": ...}`` with the same weights, in training mode on ``device``."""
    ours = Wav2Vec2(cfg).to(device).train()
    ref = TorchaudioEncoder(Wav2Vec2(cfg)).to(device).train()
    # same weights on both sides (the reference's head is a separate copy of ours)
    load_pretrained(ours, from_torchaudio(ref.ta.state_dict(), cfg.extractor_mode))
    ref.head.load_state_dict(ours.state_dict())
    return {"ours": ours, "torchaudio": ref}


def make_batch(batch: int, seconds: float, device: torch.device) -> dict[str, torch.Tensor]:
    """``batch`` utterances of ``seconds`` of white noise at 16 kHz, unpadded."""
    n = int(seconds * 16_000)
    return {"audio": torch.randn(batch, n, device=device),
            "lengths": torch.full((batch,), n, dtype=torch.int64, device=device)}


def compile_loss(model: nn.Module) -> None:
    """Replace ``model.compute_loss`` by ``torch.compile(model.compute_loss)`` (compiled at the first call)."""
    model.compute_loss = torch.compile(model.compute_loss)


@dataclass
class Measurement:
    """Seconds of each timed step, and the peak CUDA memory over the steps (``None`` on the CPU)."""

    times: list[float] = field(default_factory=list)
    peak_bytes: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def merge(self, other: "Measurement") -> "Measurement":
        peaks = [p for p in (self.peak_bytes, other.peak_bytes) if p is not None]
        return Measurement(self.times + other.times, max(peaks) if peaks else None)


def measure(model: nn.Module, batch: Mapping[str, torch.Tensor], steps: int, warmup: int, precision: str,
            device: torch.device, *, on_step: Callable[[], None] | None = None) -> Measurement:
    """Time ``steps`` training steps (forward, backward, AdamW) after ``warmup`` untimed ones.

    ``precision`` ``"bf16"`` is bf16 autocast on CUDA (the CPU runs fp32). The peak CUDA memory is
    counted from a reset at the start. ``on_step`` is called after every step (e.g. a profiler's
    ``step``).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" and device.type == "cuda"
           else nullcontext())
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
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
        if on_step is not None:
            on_step()
    return Measurement(times, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)


def compare(models: Mapping[str, nn.Module], batch: Mapping[str, torch.Tensor], *, steps: int, warmup: int,
            precision: str, device: torch.device, rounds: int = 2, deadline: float | None = None
            ) -> dict[str, Measurement]:
    """:func:`measure` every model, ``rounds`` times in turn so that drifting machine load affects all
    alike (``warmup`` warm-up steps in the first round, 1 in later ones). No further round starts once
    ``time.perf_counter()`` is past ``deadline``."""
    results: dict[str, Measurement] = {}
    for rnd in range(rounds):
        if rnd and deadline is not None and time.perf_counter() > deadline:
            break
        for name, model in models.items():
            m = measure(model, batch, steps, warmup if rnd == 0 else 1, precision, device)
            results[name] = results[name].merge(m) if name in results else m
    return results


def report(results: Mapping[str, Measurement], audio_s: float) -> None:
    """Print each side's median step time, throughput and peak memory, and the ratio ours / torchaudio."""
    for name, m in results.items():
        peak = f", peak memory {m.peak_bytes / 2**30:.1f} GiB" if m.peak_bytes is not None else ""
        print(f"{name:>10}: {m.median:.3f} s/step, {audio_s / m.median:.1f} audio-s/s ({len(m.times)} steps){peak}")
    print(f"ratio (ours / torchaudio throughput): {results['torchaudio'].median / results['ours'].median:.2f}")


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
    batch = make_batch(args.batch, args.seconds, device)
    models = make_pair(Wav2Vec2Config.preset("base"), device)
    if args.compile:
        for model in models.values():
            compile_loss(model)
    results = compare(models, batch, steps=args.steps, warmup=args.warmup, precision=args.precision, device=device)
    print(f"device={device}, batch={args.batch} x {args.seconds} s, precision={args.precision}, "
          f"compile={args.compile}, threads={torch.get_num_threads()}")
    report(results, args.batch * args.seconds)


if __name__ == "__main__":
    main()
