"""Two trainings at once on 2 cores: why the test command runs the notebooks one after the other.

Each job is what a chapter's training cell does: ``chapter.setup()`` (2 threads, the pinned kernels), then
``--updates`` updates of the ``tiny`` wav2vec 2.0 recipe, in a fresh process. The benchmark times

- one job alone, with OpenMP's waiting threads sleeping (``OMP_WAIT_POLICY=PASSIVE``): the reference;
- two jobs at once with OpenMP's default, where waiting threads spin for a while before they sleep;
- two jobs at once with ``PASSIVE``.

It prints each wall time and the throughput ratio against running the two jobs one after the other
(twice the reference; above 1: faster), and checks that every job logged the same losses, bit for bit,
as the reference: the number of threads, not the number of free cores, decides how a sum is split.
Run it from the pinned environment of ``scripts/common.sh``:

    source scripts/common.sh && python bench/bench_parallel.py

Two equal trainings gain from sharing the cores with ``PASSIVE`` (``bench/RESULTS.md``), but two chapters
at once did not: in a run of the test command with the chapters in two chains on two workers, each
chapter's training took 1.9 to 2.3 times as long as alone, so the test command keeps the notebooks on one
process and gives the second core to the unit tests only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def job(updates: int) -> None:
    """One training, printing its logged losses as JSON (run in a child process)."""
    from speechssl import chapter

    ch = chapter.setup()
    run = ch.train(ch.recipe("wav2vec2"), stop_at=updates)
    print(json.dumps([row["loss"] for row in run.history]))


def launch(updates: int, runs: str, policy: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(SPEECHSSL_RUNS=runs, SPEECHSSL_PROGRESS="0", **({"OMP_WAIT_POLICY": policy} if policy else {}))
    return subprocess.Popen([sys.executable, __file__, "--job", str(updates)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def together(updates: int, policy: str | None, n: int) -> tuple[float, list[list[float]]]:
    """Wall time of ``n`` jobs started at once, and their losses."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        procs = [launch(updates, os.path.join(tmp, str(i)), policy) for i in range(n)]
        outs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise SystemExit(f"a training job failed (exit codes {[p.returncode for p in procs]})")
    return wall, [json.loads(o.strip().splitlines()[-1]) for o in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=40, help="updates per job (default 40)")
    ap.add_argument("--job", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job is not None:
        return job(args.job)
    alone, (ref,) = together(args.updates, "PASSIVE", 1)
    print(f"one job alone (PASSIVE): {alone:.1f} s for {args.updates} updates (reference)")
    for name, policy in (("OpenMP's default", None), ("PASSIVE", "PASSIVE")):
        wall, losses = together(args.updates, policy, 2)
        same = all(run == ref for run in losses)
        print(f"two jobs at once, {name}: {wall:.1f} s; throughput {2 * alone / wall:.2f}x one after the other; "
              f"losses {'identical to' if same else 'DIFFERENT from'} the reference")


if __name__ == "__main__":
    main()
