"""The pinned CPU kernel path (speechssl.kernels): scripted runs use it, and its bits do not depend on
the instruction sets the CPU offers beyond AVX-512's foundation."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from speechssl import kernels

ROOT = Path(__file__).resolve().parents[1]


def _avx512() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return all(f in flags for f in ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"))


x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or not _avx512(),
                              reason="the pinned path needs an x86-64 CPU with AVX-512")

# A few training steps through the ops the models use: strided convolutions, GEMMs, layer norm, GELU,
# softmax and a log-softmax loss, with Adam. Prints a hash of the weights after training.
_TRAIN = """
import hashlib, torch
from speechssl import kernels
kernels.pin()
torch.set_num_threads(2)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv1d(1, 32, 10, 5), torch.nn.GELU(), torch.nn.Conv1d(32, 32, 3, 2),
                          torch.nn.GELU())
head = torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 64), torch.nn.Softmax(-1),
                           torch.nn.Linear(64, 8))
opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
x, y = torch.randn(4, 1, 4000), torch.randint(0, 8, (4, 399))
for _ in range(5):
    logits = head(net(x).transpose(1, 2))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 8), y.reshape(-1))
    opt.zero_grad(); loss.backward(); opt.step()
print(kernels.pinned(), hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in
      [*net.parameters(), *head.parameters()])).hexdigest())
"""

# What a first AVX-512 CPU (Skylake-SP) would offer: MKL capped at AVX-512's foundation, oneDNN too, and
# glibc's dispatch without the later extensions (VNNI, BF16, FP16, AMX).
_FOUNDATION_ONLY = {
    "MKL_ENABLE_INSTRUCTIONS": "AVX512",
    "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512_VNNI,-AVX512_BF16,-AVX512_FP16,-AVX_VNNI,-AMX_BF16,-AMX_TILE,"
                      "-AMX_INT8",
}


def _train(**env: str) -> tuple[str, str]:
    full = {k: v for k, v in os.environ.items()
            if k not in kernels.PINNED and k not in _FOUNDATION_ONLY and k != "LD_PRELOAD"}
    full["PYTHONPATH"] = str(ROOT / "lib")
    out = subprocess.run([sys.executable, "-c", _TRAIN], env={**full, **env}, capture_output=True, text=True,
                         check=True, timeout=300)
    pinned, digest = out.stdout.split()
    return pinned, digest


@x86_only
def test_pinned_path_gives_the_same_bits_without_later_extensions():
    pinned, digest = _train(**kernels.pinned_env())
    assert pinned == "True"
    assert _train(**kernels.pinned_env(), **_FOUNDATION_ONLY) == (pinned, digest)


@x86_only
def test_the_preload_makes_mkl_run_its_intel_branch():
    """With the preload MKL answers "Intel" to its vendor test, so its AVX-512 branch runs on any CPU with
    AVX-512; on an Intel CPU the preload changes no bit, elsewhere it is what makes the path the stored one."""
    import ctypes

    lib = kernels.mkl_preload()
    assert lib is not None and lib.is_file()
    assert ctypes.CDLL(str(lib)).mkl_serv_intel_cpu_true() == 1
    env = kernels.pinned_env()
    assert env["LD_PRELOAD"].split(":")[-1] == str(lib) and all(env[k] == v for k, v in kernels.PINNED.items())
    without = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    if "GenuineIntel" in open("/proc/cpuinfo").read():
        assert _train(**without) == _train(**env)
    else:
        assert _train(**without)[0] == "False"          # MKL's own branch here: not the pinned path


@x86_only
def test_a_failing_compiler_is_named_and_the_path_stays_as_before(tmp_path):
    """A C compiler that fails leaves no preload in the cache, and the kernels command names the failure on
    stderr (not a missing compiler) while it still prints the pinned exports."""
    cc = tmp_path / "broken-cc"
    cc.write_text("#!/bin/sh\necho 'broken-cc: cannot write output' >&2\nexit 3\n")
    cc.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "CC": str(cc), "SPEECHSSL_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "speechssl.kernels"], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split("\n") == [f"export {k}={v}" for k, v in kernels.PINNED.items()] + [""]
    assert "broken-cc" in out.stderr and "exit 3" in out.stderr and "cannot write output" in out.stderr
    assert "no C compiler" not in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "cache" / "mkl-intel-branch.so").exists()


@x86_only
def test_an_unpinned_process_says_so():
    assert _train()[0] == "False"


@x86_only
def test_scripts_run_the_pinned_path():
    probe = 'from speechssl import kernels; kernels.pin(); print(kernels.pinned())'
    out = subprocess.run(["bash", "-c", f'eval "$({sys.executable} -m speechssl.kernels)"; '
                                        f'{sys.executable} -c "{probe}"'],
                         env={**os.environ, "PYTHONPATH": str(ROOT / "lib")}, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "True"
    assert 'eval "$(python -m speechssl.kernels)"' in (ROOT / "scripts" / "common.sh").read_text()


def test_commands_at_tiny_scale_run_the_chapters_kernels(monkeypatch):
    """A command at ``tiny`` scale switches oneDNN off as ``chapter.setup`` does, so that its numbers are the
    chapters'; at another scale, and for a command without one, the process keeps torch's default."""
    import torch

    from speechssl.cli import run_command

    seen = []
    body = lambda info: seen.append(torch.backends.mkldnn.enabled) or 0
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
    assert run_command("x", body, scale=lambda: "reduced") == 0 and run_command("x", body) == 0
    assert run_command("x", body, scale=lambda: "tiny") == 0
    assert seen == [True, True, False]
    monkeypatch.setenv("SPEECHSSL_SCALE", "huge")                       # a bad scale: the one-line error
    from speechssl import paths

    assert run_command("x", body, scale=lambda: paths.scale()) == 2
