"""MCU activation memory: vMCU segment-overlap planning vs TFLite Micro and TinyEngine, proven by execution.

Pipeline (research report §4): a float model is lowered to an int8 NHWC layer IR (`lower`, `quantize`),
planned by one of five planners (`plan(ir, "naive" | "tflm" | "tinyengine" | "vmcu" | "vmcu_fused")`)
or patch by patch (`plan_patch`: MCUNetV2's patch-based inference inside the vMCU pool; `fit_budget`
picks planner and patch setting for a byte budget) into a `MemoryPlan`, and executed inside exactly
the planned bytes (`run`), bit-exact against `reference` and shadow-checked (no live byte
overwritten, else `PlanUnsafe`). Seed paper: Zheng et al., "vMCU: Coordinated Memory Management and
Kernel Optimization for DNN Inference on MCUs", MLSys 2024.
"""

from dnninfer.memory.executor import Arc, PlanUnsafe, Shadow, required_bytes, run
from dnninfer.memory.fixedpoint import quantize_multiplier, requantize
from dnninfer.memory.ir import IR, FloatParams, IBBlock, IRBuilder, Layer, QuantParams, Tensor
from dnninfer.memory.kernels import layer_acc, layer_row, reference, torch_acc
from dnninfer.memory.lower import lower, run_float
from dnninfer.memory.models import (
    BENCHMARKS,
    DigitsVmcuCNN,
    benchmark_ir,
    digits_cnn_int8,
    example_input,
    mobilenet_v2_int8,
    mobilenet_v2_ir,
)
from dnninfer.memory.patch import fit_budget, plan_patch, prefix_lengths
from dnninfer.memory.plan import KIB, MemoryPlan, PatchSpec, Step
from dnninfer.memory.planners import PLANNERS, plan, planner_options
from dnninfer.memory.quantize import dequantize, quantize, quantize_input, saturation
from dnninfer.memory.vmcu import fused_ib_shift, layer_shift, single_layer_reduction, standard_single_layers

__all__ = [
    "BENCHMARKS",
    "IR",
    "KIB",
    "PLANNERS",
    "Arc",
    "DigitsVmcuCNN",
    "FloatParams",
    "IBBlock",
    "IRBuilder",
    "Layer",
    "MemoryPlan",
    "PatchSpec",
    "PlanUnsafe",
    "QuantParams",
    "Shadow",
    "Step",
    "Tensor",
    "benchmark_ir",
    "dequantize",
    "digits_cnn_int8",
    "example_input",
    "fit_budget",
    "fused_ib_shift",
    "layer_acc",
    "layer_row",
    "layer_shift",
    "lower",
    "mobilenet_v2_int8",
    "mobilenet_v2_ir",
    "plan",
    "plan_patch",
    "planner_options",
    "prefix_lengths",
    "quantize",
    "quantize_input",
    "quantize_multiplier",
    "reference",
    "requantize",
    "required_bytes",
    "run",
    "run_float",
    "saturation",
    "single_layer_reduction",
    "standard_single_layers",
    "torch_acc",
]
