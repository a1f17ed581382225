"""Which lowering an export applies, and what it produced.

Lowerings are data registered beside their ops (edgeport/ops/registry.py); this module picks one for an
export, in this order:
1. the one named by `--lowering` (always wins);
2. the measured default for this CPU class and precision (edgeport/ops/lowering_defaults.json): the class
   is this machine's (edgeport.runtime.machine.detect_cpu_class) unless `--cpu-class` names the serving machine's;
   the precision is "fp32", or the tag of the `--quantize` scheme (int8 -> int8-dyn-pc);
3. else the static default: the family's "default", else "generic", else none (the plain route: torch.onnx
   of the reference as built, or the family's TFLite route). An export meant for a quantization scheme that
   cannot reach weights inside fused ops (edgeport.schemes.needs_unfused_graph) takes the unfused
   "generic" lowering here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeport.errors import EdgeportError
from edgeport.ops.lowering_defaults import SHOWN_AS, measured_default, per_model, runner_up_line
from edgeport.ops.registry import Lowering, find_lowering, lowerings_for
from edgeport.schemes import needs_unfused_graph, resolve

__all__ = ["Lowered", "Lowering", "LoweringChoice", "choose_lowering", "find_lowering", "lowerings_for",
           "check_cpu_class"]


@dataclass
class Lowered:
    """What an exporter wrote into the output folder."""

    artifact: str  # file name in the folder (model.onnx, model.tflite; + model.onnx.data when > 2 GB)
    converter: dict  # tool versions, opset, route, lowering notes (the manifest's `converter`)
    custom_ops: list = field(default_factory=list)  # [{"domain", "op_type", "count", "runtimes", "attributes"}]
    validation: object = None  # ops.registry.CustomOpLibrary the parity check runs custom nodes with, or None


@dataclass
class LoweringChoice:
    """Why a lowering was taken: what the manifest records under converter["lowering_choice"]."""

    why: str  # "named" | "measured" | "default" | "unfused for <scheme>"
    precision: str  # "fp32" or the quantize scheme's tag ("int8-dyn-pc")
    cpu_class: str | None  # "avx2" | "avx512_vnni" | None (unknown: no measured defaults)
    cpu_class_from: str  # "detected" (this machine) | "--cpu-class" (the user's)
    line: str  # the one progress line that says it
    measured_ms: dict | None = None  # {model: {lowering: ms}} (lowering_defaults.per_model), when measured

    def to_dict(self) -> dict:
        """JSON-ready dict for the manifest (the line left out, the table named)."""
        d = {"why": self.why, "precision": self.precision, "cpu_class": self.cpu_class,
             "cpu_class_from": self.cpu_class_from}
        if self.measured_ms is not None:
            d.update(measured_ms=self.measured_ms, table=SHOWN_AS)
        return d


# Targets --cpu-class applies to: the classes (machine.CPU_CLASSES) are x86 classes whose defaults
# lowering_defaults.json measures with onnxruntime. TFLite runs on LiteRT (phones, ARM) and TensorRT's ONNX
# on NVIDIA GPUs: an x86 class says nothing of either, so it is refused there rather than ignored.
CPU_CLASS_TARGETS = ("onnx",)


def check_cpu_class(cpu_class: str | None, target: str | None = None) -> None:
    """EdgeportError unless `cpu_class` is None or a class edgeport.runtime.machine.cpu_class can return, and
    `target` (a TARGETS name; None: not checked) is one of CPU_CLASS_TARGETS."""
    from edgeport.runtime.machine import CPU_CLASSES

    if cpu_class is not None and cpu_class not in CPU_CLASSES:
        raise EdgeportError(f"--cpu-class must be one of {', '.join(CPU_CLASSES)}, got '{cpu_class}'")
    if cpu_class is not None and target is not None and target not in CPU_CLASS_TARGETS:
        raise EdgeportError(f"--cpu-class applies to --target {' | '.join(CPU_CLASS_TARGETS)} (lowerings measured "
                            f"with onnxruntime per x86 CPU class); --target {target} does not run there and takes "
                            "its static default lowering: drop --cpu-class")


def choose_lowering(family: str, target: str, name: str | None, quantize: str | None,
                    cpu_class: str | None = None) -> tuple[Lowering | None, LoweringChoice]:
    """-> (lowering or None for the plain route, LoweringChoice) by the module docstring's order.

    `cpu_class`: the class of the machine that will run the export (None: detect this machine's).
    Raises EdgeportError when `name` is not registered for (family, target), `quantize` is not a scheme
    `target` supports, or `cpu_class` is not a measured class or given for a target it does not apply to
    (check_cpu_class).
    """
    check_cpu_class(cpu_class, target)
    scheme = resolve(quantize, target) if quantize else None
    precision = scheme.tag if scheme else "fp32"
    source = "--cpu-class" if cpu_class else "detected"
    if name is not None:
        low = find_lowering(family, target, name)
        return low, LoweringChoice("named", precision, cpu_class, source, f"lowering '{name}' (named)")
    if cpu_class is None:
        from edgeport.runtime.machine import detect_cpu_class

        cpu_class = detect_cpu_class()
    entry = measured_default(family, target, precision, cpu_class)
    if entry is not None and entry["lowering"] in lowerings_for(family, target):
        ms, runs = per_model(entry), len(entry["measurements"])
        return find_lowering(family, target, entry["lowering"]), LoweringChoice(
            "measured", precision, cpu_class, source,
            f"lowering {entry['lowering']}: measured default for {precision} on {cpu_class} ({source}; fastest by "
            f"the geometric mean over {runs} measurement{'s' * (runs > 1)} of {', '.join(ms)}): "
            f"{runner_up_line(entry)}; "
            f"see {SHOWN_AS}", ms)
    chosen = find_lowering(family, target, None)
    why = "no measured default for " + (f"{precision} on {cpu_class}" if cpu_class else "an unknown CPU class")
    if quantize and chosen is not None and chosen.fuses_weights and \
            needs_unfused_graph(scheme) and "generic" in lowerings_for(family, target):
        return find_lowering(family, target, "generic"), LoweringChoice(
            f"unfused for {quantize}", precision, cpu_class, source,
            f"lowering 'generic' (unfused): {quantize} cannot reach weights inside fused ops")
    line = f"lowering '{chosen.name}' (static default; {why})" if chosen else \
        f"lowering: none (the plain route; {why})"
    return chosen, LoweringChoice("default", precision, cpu_class, source, line)
