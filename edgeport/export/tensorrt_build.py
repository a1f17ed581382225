"""TensorRT engines from a tensorrt export folder: optimization profiles, build commands, the builder.

    edgeport build-engine FOLDER [--min S --opt S --max S] [--precision fp32|fp16] [--timing-cache FILE]

Shapes are trtexec's syntax, `input_ids:1x8,attention_mask:1x8` (any input left out takes the default
profile). The default profile reads each input's symbolic dims from the graph (DIM_RANGES), so the same
profile serves encoders, decoders with a KV cache and LUKE's entity inputs.

Every tensorrt export records `tensorrt_build` in its manifest's converter block: the profile and the
equivalent `trtexec` (TensorRT 10: `--fp16` for fp16; TensorRT 11 builds strongly typed networks only,
so fp16 comes from an fp16 graph with `--stronglyTyped`) and `polygraphy run --trt --onnxrt` command
lines, for users who build on another host. `build_engine` uses the TensorRT Python API (builder,
one optimization profile, workspace memory pool, timing cache); it runs only where `tensorrt` imports
(never on the machines this project is developed on: no GPU, and PyPI's tensorrt wheels download their
libraries from another index).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeport.errors import EdgeportError

# symbolic dim -> (min, opt, max); "L" is the model's longest sequence (max_sequence_length).
DIM_RANGES = {"batch": (1, 1, 8), "sequence": (1, "L/2", "L"), "past": (0, "L/2", "L-1"), "total": (1, "L", "L"),
              "choices": (2, 4, 8), "entities": (1, 8, 32), "mention": (1, 8, 30)}
OTHER_DIM = (1, 16, 64)  # a symbolic dim not in DIM_RANGES
WORKSPACE_MIB = 4096


def _resolve(v, longest: int) -> int:
    if isinstance(v, int):
        return v
    return {"L": longest, "L/2": max(1, longest // 2), "L-1": longest - 1}[v]


def graph_inputs(onnx_path: Path) -> list:
    """[(name, [int or symbolic str, ...])] of the graph inputs (initializers excluded)."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    return [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in proto.graph.input if i.name not in inits]


def default_profile(inputs: list, longest: int) -> dict:
    """{"min"|"opt"|"max": {input: [dims]}} from DIM_RANGES; fixed dims stay as they are."""
    out = {}
    for k, which in (("min", 0), ("opt", 1), ("max", 2)):
        out[k] = {name: [d if isinstance(d, int) and d > 0 else
                         _resolve(DIM_RANGES.get(d, OTHER_DIM)[which], longest) for d in dims]
                  for name, dims in inputs}
    return out


def parse_shapes(text: str | None, names: list) -> dict:
    """trtexec syntax "a:1x8,b:1x8" -> {"a": [1, 8], ...}; EdgeportError naming the inputs on a bad spec."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        name, _, dims = part.strip().rpartition(":")
        if name not in names:
            raise EdgeportError(f"shape for unknown input '{name}'; the graph takes {', '.join(names)}")
        try:
            out[name] = [int(x) for x in dims.split("x")]
        except ValueError:
            raise EdgeportError(f"bad shape '{part}': expected name:DxDx... (e.g. input_ids:1x128)") from None
    return out


def _arg(shapes: dict, sep: str = "x") -> str:
    return ",".join(f"{n}:{sep.join(str(d) for d in dims)}" for n, dims in shapes.items())


def commands(artifact: str, profile: dict, precision: str = "fp32", timing_cache: str | None = None) -> dict:
    """The equivalent command lines: {"trtexec": TensorRT 10 form, "trtexec_strongly_typed": TensorRT 11
    form (precision from the graph), "polygraphy": build with TensorRT and compare against onnxruntime}."""
    engine = Path(artifact).with_suffix(".engine").name
    shapes = " ".join(f"--{k}Shapes={_arg(profile[k])}" for k in ("min", "opt", "max"))
    cache = f" --timingCacheFile={timing_cache}" if timing_cache else ""
    base = f"trtexec --onnx={artifact} {shapes} --memPoolSize=workspace:{WORKSPACE_MIB}M --saveEngine={engine}{cache}"
    poly = " ".join(f"--trt-{k}-shapes " + " ".join(f"{n}:{list(d)}".replace(" ", "") for n, d in profile[k].items())
                    for k in ("min", "opt", "max"))
    return {"trtexec": base + (" --fp16" if precision == "fp16" else ""),
            "trtexec_strongly_typed": base + " --stronglyTyped",
            "polygraphy": f"polygraphy run {artifact} --trt --onnxrt {poly}"
                          + (" --fp16" if precision == "fp16" else "") + " --atol 1e-3 --rtol 1e-3"}


def _longest(ctx) -> int:
    cfg = getattr(ctx, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 1:
            return min(v, 4096)  # profiles beyond this are the user's call (--max)
    return 512


def build_commands_note(path: Path, ctx=None) -> dict:
    """Graph pass of the tensorrt target: {"tensorrt_build": {"profile", "commands"}} for the manifest."""
    profile = default_profile(graph_inputs(Path(path)), _longest(ctx))
    return {"tensorrt_build": {"profile": profile, "commands": commands(Path(path).name, profile)}}


def build_engine(folder, min_shapes: str | None = None, opt_shapes: str | None = None, max_shapes: str | None = None,
                 precision: str = "fp32", timing_cache: str | None = None, workspace_mib: int = WORKSPACE_MIB,
                 out: str | None = None) -> Path:
    """Build `<folder>/model.engine` from a tensorrt export with the TensorRT Python API.

    One optimization profile (the manifest's default, overridden per input by the trtexec-style shape
    strings), a workspace pool of `workspace_mib` MiB, a timing cache read from and written back to
    `timing_cache`. precision "fp16": the TensorRT 10 builder flag when it exists, else (TensorRT 11,
    strongly typed) the graph's own types decide and an fp32 graph raises EdgeportError.
    Raises EdgeportError when the folder is not a tensorrt export, tensorrt does not import, or the parser
    or builder fails (their first error message).
    """
    from edgeport.manifest import read_manifest

    m, folder = read_manifest(folder)
    if m.target != "tensorrt":
        raise EdgeportError(f"{folder}: a {m.target} export; build-engine takes `--target tensorrt` exports")
    if precision not in ("fp32", "fp16"):
        raise EdgeportError(f"--precision {precision}: fp32 or fp16 (int8/int4 come from a QDQ graph: "
                            "`edgeport quantize`)")
    onnx_path = folder / m.artifact
    inputs = graph_inputs(onnx_path)
    names = [n for n, _ in inputs]
    profile = m.converter.get("tensorrt_build", {}).get("profile") or default_profile(inputs, m.max_sequence_length)
    for key, text in (("min", min_shapes), ("opt", opt_shapes), ("max", max_shapes)):
        profile[key] = {**profile[key], **parse_shapes(text, names)}
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgeportError("building an engine needs TensorRT (`import tensorrt` failed): run this on a GPU host "
                            "with TensorRT 10+, or use the trtexec command in the manifest") from None
    engine = _build(trt, onnx_path, profile, precision, timing_cache, workspace_mib)
    target = Path(out) if out else folder / "model.engine"
    target.write_bytes(engine)
    (folder / "engine.json").write_text(json.dumps({"engine": target.name, "tensorrt": trt.__version__,
                                                    "precision": precision, "profile": profile}, indent=2))
    return target


def _build(trt, onnx_path: Path, profile: dict, precision: str, timing_cache, workspace_mib: int) -> bytes:
    """The TensorRT Python API calls: network from the parser, one profile, config, serialized engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # DisentangledAttention_TRT and the other shipped plugins
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10 needs it; 10+ ignores it
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EdgeportError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errs[0] if errs else 'no message'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision == "fp16":
        if hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            raise EdgeportError("this TensorRT builds strongly typed networks only: export an fp16 graph instead")
    opt = builder.create_optimization_profile()
    for name in profile["min"]:
        opt.set_shape(name, profile["min"][name], profile["opt"][name], profile["max"][name])
    config.add_optimization_profile(opt)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise EdgeportError("TensorRT's builder failed (see its log above)")
    if timing_cache:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(engine)


def _cmd_build_engine(a):
    path = build_engine(a.folder, a.min, a.opt, a.max, a.precision, a.timing_cache, a.workspace)
    print(f"wrote {path}")


def register(sub) -> None:
    """Add `edgeport build-engine` to the CLI's subparsers."""
    b = sub.add_parser("build-engine", help="build a TensorRT engine from a `--target tensorrt` export "
                       "(needs tensorrt and a GPU)")
    b.add_argument("folder", help="a tensorrt export folder (edgeport.json + model.onnx)")
    for k in ("min", "opt", "max"):
        b.add_argument(f"--{k}", metavar="SHAPES", help=f"{k} shapes of the profile, trtexec syntax: "
                       "input_ids:1x128,attention_mask:1x128 (default: the manifest's profile)")
    b.add_argument("--precision", default="fp32", help="fp32 | fp16 (TensorRT 10 builder flag)")
    b.add_argument("--timing-cache", help="timing cache file, read if present and written back")
    b.add_argument("--workspace", type=int, default=WORKSPACE_MIB, help="workspace pool in MiB (default 4096)")
    b.set_defaults(fn=_cmd_build_engine)
