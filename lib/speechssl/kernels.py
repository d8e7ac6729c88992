"""The same bits on every x86-64 CPU: the kernels that CPU runs at ``tiny`` scale use.

PyTorch chooses its CPU kernels by the instruction sets of the machine: ATen's vectorised loops run
with AVX-512 where the CPU has it and AVX2 where not, MKL picks a GEMM code branch per CPU, and oneDNN's
convolutions choose both an instruction set and a blocking from the CPU's cache sizes. Each choice
changes the order of floating-point sums, so the last bits of a forward and backward pass differ from
one CPU to another. The ``tiny`` trainings are short and chaotic: those last bits grow into different
runs (a codebook that collapses on one CPU and not on another), and the committed ``tiny`` outputs
could then only be reproduced on the CPU that produced them.

So every CPU run of the book (``scripts/common.sh`` exports :data:`PINNED`) uses one kernel path,
at the AVX2 level that every x86-64 server CPU since 2013 (Intel Haswell, AMD Zen) has:

- ``ATEN_CPU_CAPABILITY=avx2``: ATen's vectorised loops (and their SLEEF transcendentals) at AVX2;
- ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility, one GEMM code branch on every CPU;
- ``OPENBLAS_CORETYPE=Haswell``: the same for NumPy's, SciPy's and scikit-learn's OpenBLAS;
- oneDNN off (:func:`pin`): convolutions go through im2col and MKL's GEMM instead of oneDNN, whose
  blocking follows the cache sizes; no environment variable switches it off.

Measured on a 2-core Xeon with AVX-512 (30 ``tiny`` updates, setup included, default path vs pinned):
wav2vec 2.0 9.4 s vs 9.8 s, wav2vec 6.8 s vs 8.6 s, vq-wav2vec 5.0 s vs 7.3 s (its convolutions are
slower without oneDNN). Hiding AVX-512 from MKL and glibc leaves the pinned path's bits unchanged
(``tests/test_kernels.py``).

``python -m speechssl.kernels`` prints the ``export`` lines that ``scripts/common.sh`` evaluates.
"""

from __future__ import annotations

import os
import platform

__all__ = ["PINNED", "pin", "pinned"]

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}


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
    """Whether this process runs the pinned kernel path (always False off x86-64)."""
    import torch

    return (_x86() and all(os.environ.get(k) == v for k, v in PINNED.items())
            and torch.backends.cpu.get_cpu_capability() == "AVX2" and not torch.backends.mkldnn.enabled)


if __name__ == "__main__":
    if _x86():
        print("\n".join(f"export {k}={v}" for k, v in PINNED.items()))
