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
  blocking follows the cache sizes; no environment variable switches it off.

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

import os
import platform

__all__ = ["PINNED", "pin", "pinned"]

PINNED = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512", "OPENBLAS_CORETYPE": "SkylakeX"}


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


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
            and torch.backends.cpu.get_cpu_capability() == "AVX512" and not torch.backends.mkldnn.enabled)


if __name__ == "__main__":
    if _x86():
        print("\n".join(f"export {k}={v}" for k, v in PINNED.items()))
