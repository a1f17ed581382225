"""This machine's facts (CPU, flags, cores, memory, library versions) and its measured limits.

    facts = machine_facts()                      # MachineFacts: cpu_model, flags, cores, RAM, versions
    limits = measure_limits(threads=2)           # MachineLimits: fp32 GFLOP/s, int8 GOP/s, GB/s (~8 s)

The limits are what onnxruntime (MLAS) reaches here at `threads` intra-op threads, the yardstick for
`edgeport bench` fractions and benchmarks/bench_peak.py:
- fp32: one (N, N) x (N, N) `MatMul`, 2*N^3 FLOP per call (a multiply-add counts 2);
- int8: one `MatMulInteger` u8 x s8 (what dynamic int8 quantization runs), 2*N^3 OP per call;
- memory read: an fp32 matrix-vector product (1, K) x (K, N) over a 256 MiB weight, far larger than any
  cache: bytes of the weight per call / time (a decode step is such products);
- memory copy: numpy's copy of a 256 MiB array, read + written bytes / time (one thread).
Each is the median over the timed calls (edgeport.runtime.latency.measure). Nothing is cached: every
call measures afresh and says how long it took. Needs the `onnx` package to build the one-node graphs
(pip install 'edgeport[bench]'); torch-free.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.runtime.latency import measure

# /proc/cpuinfo flag -> the name people use; what decides which kernels MLAS and XNNPACK pick
CPU_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512F", "avx512_vnni": "AVX-512 VNNI",
             "avx512_bf16": "AVX-512 BF16", "avx_vnni": "AVX-VNNI", "amx_tile": "AMX", "amx_int8": "AMX-INT8",
             "amx_bf16": "AMX-BF16", "asimd": "NEON", "asimddp": "NEON dot product", "i8mm": "Arm I8MM"}
LIBRARIES = ("edgeport", "onnxruntime", "ai-edge-litert", "numpy", "onnx", "tokenizers")
SETTLE_S = 0.3  # idle pause after a session: its worker threads stop spinning (benchmarks/common.py)
MEMORY_BYTES = 256 * 2**20  # streamed per call by the bandwidth probes: well beyond any L3 cache


@dataclass
class MachineFacts:
    """What this machine is; fields as named, flags as CPU_FLAGS' names that /proc/cpuinfo lists."""

    cpu_model: str
    flags: list  # e.g. ["AVX2", "FMA", "AVX-512F", "AVX-512 VNNI"]; empty where /proc/cpuinfo is absent
    logical_cpus: int  # os.cpu_count()
    usable_cpus: int  # CPUs this process may run on (scheduler affinity)
    ram_gib: float | None  # MemTotal, GiB (None off Linux)
    available_gib: float | None  # MemAvailable at the time of the call, GiB
    load_average: list  # 1, 5, 15 minute load averages at the time of the call (os.getloadavg)
    os: str
    python: str
    libraries: dict  # distribution name -> version, None when not installed


def _cpuinfo() -> tuple[str, list]:
    """(model name, flags) from /proc/cpuinfo; (platform.processor(), []) where it does not exist."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "CPU part") and model == platform.machine():
            model = value.strip()
        elif key in ("flags", "Features"):
            flags |= set(value.split())
    return model, [name for flag, name in CPU_FLAGS.items() if flag in flags]


CPU_CLASSES = ("avx2", "avx512_vnni")  # what edgeport/ops/lowering_defaults.json is keyed by


def cpu_class(flags: list) -> str | None:
    """The CPU feature class measured lowering defaults are keyed by, from CPU_FLAGS' names (e.g.
    MachineFacts.flags): "avx512_vnni" when AVX-512 VNNI is there (AMX machines included: they are not
    measured apart), else "avx2" with AVX2 and FMA, else None (e.g. Arm, or no /proc/cpuinfo: unknown)."""
    have = set(flags)
    if "AVX-512 VNNI" in have:
        return "avx512_vnni"
    if {"AVX2", "FMA"} <= have:
        return "avx2"
    return None


def detect_cpu_class() -> str | None:
    """This machine's cpu_class, from /proc/cpuinfo (cheap; None where it does not exist)."""
    return cpu_class(_cpuinfo()[1])


def _meminfo() -> dict | None:
    """/proc/meminfo as {field: its value text, e.g. "1234 kB"}; None where it does not exist."""
    try:
        with open("/proc/meminfo") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None


def _meminfo_gib() -> tuple[float | None, float | None]:
    """(MemTotal, MemAvailable) in GiB from /proc/meminfo; (None, None) where it does not exist."""
    rows = _meminfo()
    if rows is None:
        return None, None
    kib = {k: int(rows[k].split()[0]) for k in ("MemTotal", "MemAvailable") if k in rows}
    return (round(kib["MemTotal"] / 2**20, 1) if "MemTotal" in kib else None,
            round(kib["MemAvailable"] / 2**20, 1) if "MemAvailable" in kib else None)


def available_memory_bytes() -> int | None:
    """Bytes this process can still allocate: MemAvailable (/proc/meminfo), capped by the cgroup v2 limit
    (memory.max - memory.current) and by an address-space limit (`ulimit -v`, RLIMIT_AS, less this
    process's current virtual size VmSize) when either is set. None where /proc/meminfo does not exist.
    Sources: proc(5) MemAvailable, the kernel's cgroup-v2 memory controller files, getrlimit(2)."""
    try:
        avail = int((_meminfo() or {})["MemAvailable"].split()[0]) * 1024
    except (KeyError, ValueError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                avail = min(avail, int(limit) - int(f.read()))
    except (OSError, ValueError):
        pass
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/status") as f:
                vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        except (OSError, StopIteration, ValueError):
            vm = 0
        avail = min(avail, max(0, soft - vm))
    return avail


def library_versions() -> dict:
    """name -> installed version (importlib.metadata) or None, for LIBRARIES."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_facts() -> MachineFacts:
    """This machine's CPU model and flags, cores, memory, load, OS and library versions (cheap: reads /proc)."""
    model, flags = _cpuinfo()
    total, avail = _meminfo_gib()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []
    return MachineFacts(cpu_model=model, flags=flags, logical_cpus=os.cpu_count() or 1, usable_cpus=usable,
                        ram_gib=total, available_gib=avail, load_average=load, os=platform.platform(),
                        python=sys.version.split()[0], libraries=library_versions())


# ---------------------------------------------------------------- one-node graphs in onnxruntime

def _onnx():
    try:
        import onnx
    except ImportError:
        raise EdgeportError("measuring limits and counting FLOPs needs the onnx package: "
                            "pip install 'edgeport[bench]'") from None
    return onnx


def matmul_model(kind: str, m: int, k: int, n: int, seed: int = 0):
    """(serialized one-node ONNX model, feeds) computing x (m, k) @ w (k, n), w a constant initializer.

    kind "fp32": MatMul float32 -> float32; "int8": MatMulInteger x uint8 @ w int8 -> int32 (the u8 x s8
    product int8 dynamic quantization runs; w in [-64, 63], 7 bits, so that the product is exact on
    AVX2 machines too, where onnxruntime's u8 x s8 kernel saturates int16 pair sums). EdgeportError for
    another kind."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if kind == "fp32":
        w, x = rng.standard_normal((k, n), np.float32), rng.standard_normal((m, k), np.float32)
        op, x_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
    elif kind == "int8":
        # 7-bit weights (as reduce_range quantization writes): x86 without VNNI multiplies u8 x s8 with
        # vpmaddubsw, whose int16 pair sums saturate past 32767 (255 x 127 x 2); 255 x 64 x 2 fits
        w, x = rng.integers(-64, 64, (k, n)).astype(np.int8), rng.integers(0, 256, (m, k)).astype(np.uint8)
        op, x_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
    else:
        raise EdgeportError(f"matmul kind must be fp32 or int8, got {kind!r}")
    g = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", x_type, [m, k])],
                          [helper.make_tensor_value_info("y", y_type, [m, n])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString(), {"x": x}


def matmul_runner(kind: str, m: int, k: int, n: int, threads: int):
    """A no-argument callable running `matmul_model(kind, m, k, n)` once in an onnxruntime CPU session with
    `threads` intra-op threads (picklable through functools.partial: benchmarks/bench_peak.py spawns it)."""
    from edgeport.runtime.session import ort_session

    model, feeds = matmul_model(kind, m, k, n)
    sess = ort_session(model, threads, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feeds)


# ---------------------------------------------------------------- limits

@dataclass
class MachineLimits:
    """Measured limits at `threads` threads: rates are medians over the timed calls."""

    threads: int
    fp32_gflops: float  # MatMul, GFLOP/s (1e9 FLOP/s; multiply-add = 2)
    int8_gops: float  # MatMulInteger u8 x s8, GOP/s
    memory_read_gbps: float  # fp32 matrix-vector product streaming 256 MiB of weights, GB/s (1e9 B/s)
    memory_copy_gbps: float  # numpy copy, read + written bytes, GB/s, one thread
    seconds: float  # wall time the measurement took
    precise: bool
    method: dict = field(default_factory=dict)  # what was timed, shapes, calls

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return asdict(self)


def _rate(fn, units_per_call: float, seconds: float) -> tuple[float, int]:
    """(median units per second / 1e9, timed calls) of `fn` over about `seconds`."""
    stats = measure(fn, warmup=2, min_seconds=seconds, min_calls=3)
    return units_per_call / (stats.median_ms / 1e3) / 1e9, stats.n


def _settle(fn):
    del fn
    gc.collect()
    time.sleep(SETTLE_S)


def _matmul_limit(kind: str, sizes, threads: int, seconds: float, method: dict) -> float:
    """Best median rate over the square sizes (G FLOP or OP per s)."""
    best = 0.0
    for n in sizes:
        fn = matmul_runner(kind, n, n, n, threads)
        rate, calls = _rate(fn, 2.0 * n**3, seconds)
        method[f"{kind} {n}^3"] = {"rate": round(rate, 1), "calls": calls}
        best = max(best, rate)
        _settle(fn)
    return best


def _memory_read(threads: int, seconds: float, method: dict) -> float:
    k = 4096
    n = MEMORY_BYTES // (4 * k)
    fn = matmul_runner("fp32", 1, k, n, threads)
    rate, calls = _rate(fn, 4.0 * k * n, seconds)
    method["memory read"] = {"what": f"fp32 MatMul (1, {k}) x ({k}, {n})", "bytes": 4 * k * n, "calls": calls}
    _settle(fn)
    return rate


def _memory_copy(seconds: float, method: dict) -> float:
    src = np.ones(MEMORY_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    rate, calls = _rate(lambda: np.copyto(dst, src), 2.0 * src.nbytes, seconds)
    method["memory copy"] = {"what": "numpy.copyto, read + write", "bytes": src.nbytes, "calls": calls}
    return rate


def measure_limits(threads: int, precise: bool = False) -> MachineLimits:
    """Measure fp32 and int8 MatMul throughput and memory bandwidth at `threads` onnxruntime threads.

    Default: one 2048^3 product per precision and each bandwidth probe timed for ~1.5 s (about 8-12 s in
    all with session set-up); `precise`: sizes 1024, 2048 and 3072 timed ~5 s each and the best median
    kept, bandwidth ~5 s (about a minute). Raises EdgeportError where onnx is not installed.
    """
    if threads < 1:
        raise EdgeportError(f"threads must be >= 1, got {threads}")
    seconds, sizes = (5.0, (1024, 2048, 3072)) if precise else (1.5, (2048,))
    t0, method = time.perf_counter(), {}
    fp32 = _matmul_limit("fp32", sizes, threads, seconds, method)
    int8 = _matmul_limit("int8", sizes, threads, seconds, method)
    read = _memory_read(threads, seconds, method)
    copy = _memory_copy(seconds, method)
    return MachineLimits(threads=threads, fp32_gflops=round(fp32, 1), int8_gops=round(int8, 1),
                         memory_read_gbps=round(read, 2), memory_copy_gbps=round(copy, 2),
                         seconds=round(time.perf_counter() - t0, 1), precise=precise, method=method)
