"""Trains a recipe at tiny scale for a few updates in this process and prints a fingerprint of the run.

``python determinism_worker.py MODEL CORPUS OUT [STEPS]``: ``CORPUS`` holds ``manifest.jsonl`` (written by
``tests/test_determinism.py``). Prints one JSON line: the loss of every update and a SHA-256 of every weight.
"""

import hashlib
import json
import sys

import torch


def main(model: str, corpus: str, out: str, steps: int) -> None:
    torch.set_num_threads(2)
    from speechssl.data.manifest import read_manifest
    from speechssl.data.units import UnitSequences, collate_units
    from speechssl.recipes import recipe
    from speechssl.run import start_run

    utts = read_manifest(corpus, "train")
    kwargs = {"vocab_size": 40} if model == "unit_bert" else {}
    r = recipe(model, "tiny", max_steps=steps, log_every=1, out_dir=out, **kwargs)
    if model == "unit_bert":
        g = torch.Generator().manual_seed(0)
        seqs = [torch.randint(3, 40, (300,), generator=g) for _ in range(32)]
        run = start_run(r, [], corpus, dataset=UnitSequences(seqs, max_len=r.train.crop_samples), collate=collate_units)
    elif model.startswith("wav2vec2_ctc"):
        from speechssl.data.transcripts import collate_ctc
        from speechssl.engine import seed_everything
        from speechssl.finetune import PHONE_VOCAB, transcribed

        seed_everything(r.train.seed)
        model = r.build(vocab=PHONE_VOCAB)
        run = start_run(r, [], corpus, model=model, collate=collate_ctc, dataset=transcribed(model, utts, corpus, "phones"))
    elif model == "hubert":   # random units at 50 Hz stand in for a teacher's
        import numpy as np

        from speechssl.engine import make_train_dataset
        from speechssl.frames import MODEL_FRAMES

        rng = np.random.default_rng(0)
        labels = {u.id: rng.integers(0, 100, MODEL_FRAMES.num_frames(u.num_samples)) for u in utts}
        run = start_run(r, utts, corpus, dataset=make_train_dataset(r.train, utts, corpus, frame_labels=labels,
                                                                   frames=MODEL_FRAMES))
    else:
        run = start_run(r, utts, corpus)
    history = run.fit()
    digest = hashlib.sha256()
    for name, tensor in sorted(run.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    print(json.dumps({"losses": [h["loss"] for h in history], "weights": digest.hexdigest()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 12)
