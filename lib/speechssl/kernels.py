"""The same bits on every x86-64 CPU with AVX-512: the kernels that CPU runs at ``tiny`` scale use.

PyTorch chooses its CPU kernels by the instruction sets of the machine: ATen's vectorised loops run
with AVX-512 where the CPU has it and AVX2 where not, MKL picks a GEMM code branch per CPU, and oneDNN's
convolutions choose both an instruction set and a blocking from the CPU's cache sizes. Each choice
changes the order of floating-point sums, so the last bits of a forward and backward pass differ from
one CPU to another. The ``tiny`` trainings are short and chaotic: those last bits grow into different
runs (a codebook that collapses on one CPU and not on another), and the committed ``tiny`` outputs
could then only be reproduced on the CPU that produced them.

So every CPU run of the book (``scripts/common.sh`` exports :data:`PINNED`) uses one kernel path, at
the AVX-512 level (the foundation instructions F, CD, BW, DQ and VL of Intel Skylake-SP and later, AMD Zen 4
and later), whatever newer extensions (VNNI, BF16, FP16, AMX) the CPU adds:

- ``ATEN_CPU_CAPABILITY=avx512``: ATen's vectorised loops (and their SLEEF transcendentals) at AVX-512;
- ``MKL_CBWR=AVX512``: MKL's conditional numerical reproducibility, one GEMM code branch on every CPU;
- ``OPENBLAS_CORETYPE=SkylakeX``: the same for NumPy's, SciPy's and scikit-learn's OpenBLAS;
- oneDNN off (:func:`pin`): convolutions go through NNPACK's forward for some shapes (a profile of
  chapter 6's GAN step showed it) and im2col with MKL's GEMM otherwise, instead of oneDNN, whose
  blocking follows the cache sizes; no environment variable switches it off;
- ``LD_PRELOAD`` of a one-function library (:func:`mkl_preload`): MKL also chooses its code by the CPU's
  vendor, and on a CPU that is not Intel's it ignores ``MKL_CBWR=AVX512`` and runs a branch of its own.
  Measured on a 2-core AMD EPYC (Zen 5) with AVX-512: a GEMM gave the same bits under ``MKL_CBWR`` AVX512,
  AVX2, AUTO and unset, and other bits than MKL's AVX-512 branch; chapters 3b to 6b and the results page
  then ended 21 checked cells away from the outputs stored on a Xeon (a codebook that collapses, verdicts
  that flip). MKL asks ``mkl_serv_intel_cpu_true`` (a symbol torch's library exports) whether the CPU is
  Intel's; the preloaded library answers yes, so every CPU with AVX-512 runs the same AVX-512 branch. On an
  Intel CPU it changes nothing. With it, chapter 1's wav2vec on that EPYC ended at the stored 400-update
  accuracy (0.2746, stored 0.275; 0.2744 without it) and trained 11 % faster (80 s against 89 s).

The AVX2 level would also cover older CPUs, but the book's tiny runs were slower on it (chapter 5:
679 s on the AVX2 path, 402 s on this one; chapters 0 to 5c: 73 min on the AVX2 path), more than CI's time
allows. Measured on a 2-core Xeon with AVX-512 and AMX,
60 ``tiny`` updates of wav2vec 2.0 with setup: 18.7 s with the CPU's own kernels and oneDNN off, 22.1 s with
oneDNN on, 21.6 s on this path, 23.5 s on the AVX2 path. Hiding the extensions beyond AVX-512's foundation
from MKL and glibc leaves this path's bits unchanged (``tests/test_kernels.py``). A CPU without AVX-512 runs
its own kernels, and its trained numbers may differ from the stored ones.

``python -m speechssl.kernels`` prints the ``export`` lines that ``scripts/common.sh`` evaluates.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["PINNED", "pin", "pinned", "pinned_env", "mkl_preload"]

PINNED = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512", "OPENBLAS_CORETYPE": "SkylakeX"}

# MKL's vendor test, answered "Intel" (the function takes no argument and returns 1 on an Intel CPU)
_MKL_VENDOR_SOURCE = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def mkl_preload() -> Path | None:
    """The shared library that makes MKL take this CPU for an Intel one (see the module notes), compiled once
    with the C compiler into ``$SPEECHSSL_CACHE`` (default ``~/.cache/speechssl``); ``None`` off x86-64 or
    without a C compiler (MKL then keeps its own branch on a CPU that is not Intel's)."""
    if not _x86():
        return None
    cache = Path(os.environ.get("SPEECHSSL_CACHE") or Path.home() / ".cache" / "speechssl")
    out = cache / "mkl-intel-branch.so"
    if out.is_file():
        return out
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src = Path(tmp) / "mkl_intel_branch.c"
        src.write_text(_MKL_VENDOR_SOURCE)
        built = Path(tmp) / out.name
        cmd = [cc, "-shared", "-fPIC", "-O2", "-o", str(built), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise OSError(f"{' '.join(cmd[:5])} {out.name} failed (exit {done.returncode}): "
                          f"{done.stderr.strip() or done.stdout.strip() or 'no message'}")
        os.replace(built, out)                              # whole or not at all, for concurrent first runs
    return out


def pinned_env() -> dict[str, str]:
    """:data:`PINNED` and, where it can be built, the ``LD_PRELOAD`` of :func:`mkl_preload` (after any library
    already preloaded): the environment a process needs, set before it starts, to run the pinned path."""
    env = dict(PINNED)
    lib = mkl_preload()
    if lib is not None:
        before = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p and p != str(lib)]
        env["LD_PRELOAD"] = ":".join([*before, str(lib)])
    return env


def _mkl_intel_branch() -> bool:
    """Whether MKL runs its Intel branches in this process: an Intel CPU, or the preload in effect."""
    try:
        if "GenuineIntel" in Path("/proc/cpuinfo").read_text():
            return True
    except OSError:
        pass
    answer = getattr(ctypes.CDLL(None), "mkl_serv_intel_cpu_true", None)   # the preload comes first if loaded
    return answer is not None and answer() == 1


def pin() -> bool:
    """Switch oneDNN off for this process and return :func:`pinned`.

    The environment of :data:`PINNED` has to be set before torch starts (``scripts/common.sh`` does);
    a process started without it keeps its CPU's default kernels.
    """
    import torch

    torch.backends.mkldnn.enabled = False
    return pinned()


def pinned() -> bool:
    """Whether this process runs the pinned kernel path (always False off x86-64 and without AVX-512)."""
    import torch

    return (_x86() and all(os.environ.get(k) == v for k, v in PINNED.items())
            and torch.backends.cpu.get_cpu_capability() == "AVX512" and not torch.backends.mkldnn.enabled
            and _mkl_intel_branch())


if __name__ == "__main__":
    if _x86():
        try:
            env, why = pinned_env(), "no C compiler found"
        except OSError as err:
            env, why = dict(PINNED), f"building MKL's vendor answer: {err}"
        if "LD_PRELOAD" not in env:
            print(f"speechssl.kernels: {why}; so MKL keeps its own branch on a CPU that is not Intel's, and "
                  "trained numbers there may differ from the stored ones", file=sys.stderr)
        print("\n".join(f"export {k}={v}" for k, v in env.items()))
