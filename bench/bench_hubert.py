"""Training-step throughput of our HuBERT BASE against torchaudio's ``hubert_pretrain_base``, side by side.

Both sides start from the same weights (torchaudio's, renamed by ``speechssl.interop.from_torchaudio_hubert``)
and run the same batch and the same 50 Hz labels through a full pre-training step (forward, backward, AdamW).
The reference's loss is that of torchaudio's HuBERT example (``examples/hubert/loss/hubert_loss.py``):
10 times the feature penalty plus the cross-entropy summed over the masked frames (the unmasked frames weigh
0), here divided by the number of masked frames as ours is (fairseq's ``sample_size``). Each side draws its own
masks (torchaudio with NumPy), with the same settings (p = 0.8, spans of 10). Prints audio-seconds per second
for each and their ratio (ours / torchaudio; above 1 means ours is faster), the median over repeated steps,
taken in turns so that drifting machine load affects both alike.

    python bench/bench_hubert.py                     # CPU, 2 x 4 s, fp32
    python bench/bench_hubert.py --device cuda --batch 8 --seconds 15.6 --precision bf16
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

import torch
import torch.nn.functional as F
import torchaudio
from bench_wav2vec2 import compare, make_batch, report
from torch import nn

from speechssl.frames import MODEL_FRAMES
from speechssl.interop import from_torchaudio_hubert, load_pretrained
from speechssl.models.hubert import Hubert, HubertConfig


class TorchaudioHubert(nn.Module):
    """``torchaudio.models.hubert_pretrain_base`` with the loss of torchaudio's HuBERT example."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.ta = torchaudio.models.hubert_pretrain_base(num_classes=num_classes)

    def compute_loss(self, batch: Mapping[str, torch.Tensor], num_updates: int = 0):
        logit_m, logit_u, pen = self.ta(batch["audio"], batch["labels"], batch["lengths"])
        n_m = logit_m.shape[0]
        target_m = torch.zeros(n_m, dtype=torch.long, device=logit_m.device)      # the target is column 0
        target_u = torch.zeros(logit_u.shape[0], dtype=torch.long, device=logit_u.device)
        loss = 10.0 * pen * n_m + F.cross_entropy(logit_m, target_m, reduction="sum") \
            + 0.0 * F.cross_entropy(logit_u, target_u, reduction="sum")
        return loss / n_m, {}


def make_pair(num_classes: int, device: torch.device) -> dict[str, nn.Module]:
    """``{"ours": ..., "torchaudio": ...}`` with the same weights, in training mode on ``device``."""
    ref = TorchaudioHubert(num_classes)
    ours = Hubert(HubertConfig.preset("base", num_classes=(num_classes,)))
    load_pretrained(ours, from_torchaudio_hubert(ref.ta.state_dict(), "group_norm"), source="torchaudio",
                    allow_missing=())
    return {"ours": ours.to(device).train(), "torchaudio": ref.to(device).train()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--num-classes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch = make_batch(args.batch, args.seconds, device)
    frames = MODEL_FRAMES.num_frames(batch["audio"].shape[1])
    batch["labels"] = torch.randint(0, args.num_classes, (args.batch, frames), device=device)
    models = make_pair(args.num_classes, device)
    results = compare(models, batch, steps=args.steps, warmup=args.warmup, precision=args.precision, device=device)
    print(f"HuBERT BASE, K={args.num_classes}, device={device}, batch={args.batch} x {args.seconds} s, "
          f"precision={args.precision}, threads={torch.get_num_threads()}")
    report(results, args.batch * args.seconds)


if __name__ == "__main__":
    main()
