"""C code generation: an int8 IR plus a `MemoryPlan` as one self-contained C file (research report §4).

`generate(ir, plan, out_dir)` writes ``model.c`` (and a small ``model.h``) in which

* weights, biases and the per-channel requantisation multipliers/shifts are ``const`` arrays (flash);
* all activations live in ONE ``static int8_t pool[POOL_BYTES]`` laid out exactly as the plan says,
  plus one ``static int8_t scratch[SCRATCH_BYTES]`` (depthwise plane, output-row tile, line buffer);
  nothing is allocated at run time and no other array holds activations;
* the kernels (conv/pw, depthwise, fc, add, avg/max pool, TinyEngine in-place depthwise, the fused
  inverted-bottleneck kernel with its k-row line buffer) are called in the planned order at the
  planned offsets; every activation byte is addressed through one rule, ``at(ref, i)``, which is a
  plain offset for linear plans and the vMCU circular-arc address ``base + (va + i) mod len`` (then
  mod P) for circular plans (`executor.Arc`);
* requantisation is the gemmlowp arithmetic documented in `fixedpoint` (srdhm, RoundingDivideByPOT,
  saturating left shift), accumulation is int32 for the products plus an int64 bias add, so the C
  output equals the Python executor (`executor.run`) bit for bit;
* ``main``: with ``-DHOST`` it reads the int8 input (HWC) from the file named by ``argv[1]`` (or
  stdin) and writes the int8 output bytes to stdout; without it (the MCU build) it runs once on
  the pool as found and returns the arg-max class, so no stdio is linked.

`compile_and_run(c_path, x)` builds with ``gcc -O2 -std=c99 -Wall -Werror -DHOST`` and runs it;
`arm_sizes(c_path, cpu)` builds for Cortex-M with ``arm-none-eabi-gcc`` and reports the section
sizes (RAM = .data + .bss, flash = text + .data), or ``None`` with the reason if the toolchain is
missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dnninfer.errors import UserError
from dnninfer.memory.executor import required_bytes
from dnninfer.memory.ir import IR, IBBlock, Layer
from dnninfer.memory.plan import MemoryPlan

HOST_CFLAGS = ("-O2", "-std=c99", "-Wall", "-Werror", "-DHOST")
ARM_CPUS = ("cortex-m4", "cortex-m7")
ARM_CFLAGS = ("-Os", "-std=c99", "-Wall", "-Werror", "-mthumb", "-ffunction-sections", "-fdata-sections",
              "-fstack-usage", "-Wl,--gc-sections", "--specs=nosys.specs")
INT32_MAX = 2**31 - 1
#: largest reduction length for which int32 product sums cannot overflow (|x - zp| <= 255, |w| <= 127)
MAX_REDUCTION = INT32_MAX // (255 * 127)

# -- the fixed part of every generated file ---------------------------------------------------------

_PRELUDE = r"""
#include <stdint.h>
#include <string.h>
#ifdef HOST
#include <stdio.h>
#endif

/* One layer's constants (flash). Shapes are (rows, columns, channels) of its first input and output. */
typedef struct {
    int32_t hin, win, cin, hout, wout, cout, k, kw, s, p;
    int32_t zp_in, zp_in2, zp_out, act_min, act_max;
    const int8_t *w;       /* conv/pw (k, kw, cin, cout); dw (k, kw, c); fc (K, N), K in HWC order */
    const int32_t *bias;   /* per output channel */
    const int32_t *m0;     /* Q31 multipliers: per output channel, or add's [in1, in2, out] */
    const int32_t *sh;     /* power-of-two exponents, same layout as m0 */
} layer_t;

/* Where a tensor's bytes live: byte i is at mem[base + ((va + i) mod len) mod mod].
 * Linear plans: base = offset, va = 0, len = size, mod = INT32_MAX (a plain offset).
 * Circular (vMCU) plans: an arc (base, len) of the P-byte pool, mod = P (executor.Arc). Row buffers in
 * scratch use len = one row (or k rows for the line buffer), so row r maps to slot r mod (len / row). */
typedef struct {
    int8_t *mem;
    int32_t base, va, len, mod;
} tref_t;

static inline int8_t *at(const tref_t *r, int32_t i) {
    int32_t v = r->va + i, a;
    if (v >= r->len) v %= r->len;
    a = r->base + v;
    if (a >= r->mod) a -= r->mod;
    return r->mem + a;
}

/* gemmlowp / TFLite reference requantisation, exactly as dnninfer.memory.fixedpoint documents. */
static inline int64_t srdhm(int64_t a, int64_t b) {           /* SaturatingRoundingDoublingHighMul */
    int64_t ab = a * b;
    int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (ab + nudge) / ((int64_t)1 << 31);                  /* C division truncates toward 0 */
}
static inline int64_t rdbpot(int64_t x, int32_t e) {          /* RoundingDivideByPOT, e >= 0 */
    int64_t mask = ((int64_t)1 << e) - 1;
    int64_t rem = x & mask, thr = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (rem > thr ? 1 : 0);                      /* >> is arithmetic (gcc) */
}
static inline int64_t requant(int64_t acc, int32_t m0, int32_t shift) {
    int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int64_t x = acc;
    if (left > 0) {                                             /* (acc << left) saturated to int32 */
        if (x > ((int64_t)INT32_MAX >> left)) x = INT32_MAX;
        else if (x < ((int64_t)INT32_MIN >> left)) x = INT32_MIN;
        else x *= (int64_t)1 << left;
    }
    if (x > INT32_MAX) x = INT32_MAX;
    if (x < INT32_MIN) x = INT32_MIN;
    return rdbpot(srdhm(x, m0), right);
}
static inline int8_t finish(const layer_t *L, int64_t acc, int32_t c) {
    int64_t y = requant(acc, L->m0[c], L->sh[c]) + L->zp_out;
    if (y < L->act_min) y = L->act_min;
    if (y > L->act_max) y = L->act_max;
    return (int8_t)y;
}
static inline void store_row(const tref_t *r, int32_t i0, const int8_t *src, int32_t n) {
    int32_t j;
    for (j = 0; j < n; ++j) *at(r, i0 + j) = src[j];
}
/* The k x kw window of output pixel (row t, column ox) of a conv or depthwise layer: the sum of
 * (x - zp_in) * w over its taps inside the input (zero padding is x = zp_in, so it adds nothing) and
 * over n channels from input channel c0; tap (ky, kx) channel ci has weight w0[(ky * kw + kx) * w_tap
 * + ci * w_ch]. conv: all cin channels, weights (k, kw, cin, cout) from w + co; dw: channel c alone. */
static inline int32_t window_sum(const layer_t *L, const tref_t *x, int32_t t, int32_t ox, int32_t c0,
                                 int32_t n, const int8_t *w0, int32_t w_tap, int32_t w_ch) {
    const int32_t si = L->win * L->cin;
    int32_t sum = 0, ky, kx, ci;
    for (ky = 0; ky < L->k; ++ky) {
        const int32_t iy = t * L->s - L->p + ky;
        if (iy < 0 || iy >= L->hin) continue;
        for (kx = 0; kx < L->kw; ++kx) {
            const int32_t ix = ox * L->s - L->p + kx;
            const int32_t base = iy * si + ix * L->cin + c0;
            const int8_t *wp = w0 + (ky * L->kw + kx) * w_tap;
            if (ix < 0 || ix >= L->win) continue;
            for (ci = 0; ci < n; ++ci)
                sum += ((int32_t)*at(x, base + ci) - L->zp_in) * (int32_t)wp[ci * w_ch];
        }
    }
    return sum;
}
"""

_KERNELS: dict[str, str] = {
    "conv": r"""
/* conv k x kw (and 1x1 pw): output row t into dst[wout * cout]; zero padding means x = zp_in */
static void conv_row(const layer_t *L, const tref_t *x, int32_t t, int8_t *dst) {
    int32_t ox, co;
    for (ox = 0; ox < L->wout; ++ox)
        for (co = 0; co < L->cout; ++co) {
            const int32_t sum = window_sum(L, x, t, ox, 0, L->cin, L->w + co, L->cin * L->cout, L->cout);
            dst[ox * L->cout + co] = finish(L, (int64_t)L->bias[co] + sum, co);
        }
}
""",
    "dw": r"""
/* depthwise k x kw: output row t into dst[wout * c] */
static void dw_row(const layer_t *L, const tref_t *x, int32_t t, int8_t *dst) {
    const int32_t c_n = L->cout;  /* = cin */
    int32_t ox, c;
    for (ox = 0; ox < L->wout; ++ox)
        for (c = 0; c < c_n; ++c) {
            const int32_t sum = window_sum(L, x, t, ox, c, 1, L->w + c, c_n, 0);
            dst[ox * c_n + c] = finish(L, (int64_t)L->bias[c] + sum, c);
        }
}
""",
    "inplace_dw": r"""
/* TinyEngine in-place depthwise: channel c is copied to a zp-padded (H+2p)(W+2p) plane in scratch,
 * then its output overwrites channel c of the same buffer (x and y share their offset). */
static void dw_inplace(const layer_t *L, const tref_t *x, const tref_t *y, int8_t *plane) {
    const int32_t hp = L->hin + 2 * L->p, wp = L->win + 2 * L->p, c_n = L->cin;
    int32_t c, iy, ix, oy, ox, ky, kx;
    for (c = 0; c < c_n; ++c) {
        memset(plane, (int8_t)L->zp_in, (size_t)(hp * wp));
        for (iy = 0; iy < L->hin; ++iy)
            for (ix = 0; ix < L->win; ++ix)
                plane[(iy + L->p) * wp + ix + L->p] = *at(x, (iy * L->win + ix) * c_n + c);
        for (oy = 0; oy < L->hout; ++oy) {
            for (ox = 0; ox < L->wout; ++ox) {
                int32_t sum = 0;
                for (ky = 0; ky < L->k; ++ky)
                    for (kx = 0; kx < L->kw; ++kx)
                        sum += ((int32_t)plane[(oy * L->s + ky) * wp + ox * L->s + kx] - L->zp_in)
                               * (int32_t)L->w[(ky * L->kw + kx) * c_n + c];
                *at(y, (oy * L->wout + ox) * c_n + c) = finish(L, (int64_t)L->bias[c] + sum, c);
            }
        }
    }
}
""",
    "fc": r"""
/* fully connected over the whole input tensor (K = hin * win * cin, HWC order): dst[cout] */
static void fc_row(const layer_t *L, const tref_t *x, int32_t t, int8_t *dst) {
    const int32_t kn = L->hin * L->win * L->cin;
    int32_t n, i;
    (void)t;
    for (n = 0; n < L->cout; ++n) {
        int32_t sum = 0;
        for (i = 0; i < kn; ++i)
            sum += ((int32_t)*at(x, i) - L->zp_in) * (int32_t)L->w[i * L->cout + n];
        dst[n] = finish(L, (int64_t)L->bias[n] + sum, n);
    }
}
""",
    "add": r"""
/* TFLite int8 ADD (left shift 20): row t; reads both inputs of an element before writing it, so dst
 * may alias either input row (in-place residual add, fused project tile). */
static void add_row(const layer_t *L, const tref_t *a, const tref_t *b, int32_t t, int8_t *dst) {
    const int32_t n = L->wout * L->cout, i0 = t * n;
    int32_t j;
    for (j = 0; j < n; ++j) {
        const int64_t xa = (int64_t)((int32_t)*at(a, i0 + j) - L->zp_in) * ((int64_t)1 << 20);
        const int64_t xb = (int64_t)((int32_t)*at(b, i0 + j) - L->zp_in2) * ((int64_t)1 << 20);
        const int64_t sa = requant(xa, L->m0[0], L->sh[0]), sb = requant(xb, L->m0[1], L->sh[1]);
        int64_t y = requant(sa + sb, L->m0[2], L->sh[2]);
        y += L->zp_out;
        if (y < L->act_min) y = L->act_min;
        if (y > L->act_max) y = L->act_max;
        dst[j] = (int8_t)y;
    }
}
""",
    "avgpool": r"""
/* average pool (global when k = hin, kw = win), no padding: round half away from zero */
static void avgpool_row(const layer_t *L, const tref_t *x, int32_t t, int8_t *dst) {
    const int32_t si = L->win * L->cin;
    int32_t ox, c, ky, kx, rows = 0;
    for (ky = 0; ky < L->k; ++ky) {
        const int32_t iy = t * L->s + ky;
        if (iy >= 0 && iy < L->hin) ++rows;
    }
    for (ox = 0; ox < L->wout; ++ox) {
        for (c = 0; c < L->cin; ++c) {
            int64_t acc = 0, y;
            const int64_t count = (int64_t)rows * L->kw, half = count / 2;
            for (ky = 0; ky < L->k; ++ky) {
                const int32_t iy = t * L->s + ky;
                if (iy < 0 || iy >= L->hin) continue;
                for (kx = 0; kx < L->kw; ++kx) acc += *at(x, iy * si + (ox * L->s + kx) * L->cin + c);
            }
            y = acc > 0 ? (acc + half) / count : (acc - half) / count;
            if (y < L->act_min) y = L->act_min;
            if (y > L->act_max) y = L->act_max;
            dst[ox * L->cin + c] = (int8_t)y;
        }
    }
}
""",
    "maxpool": r"""
/* max pool: padding never wins (as the Python kernel's -32768 fill) */
static void maxpool_row(const layer_t *L, const tref_t *x, int32_t t, int8_t *dst) {
    const int32_t si = L->win * L->cin;
    int32_t ox, c, ky, kx;
    for (ox = 0; ox < L->wout; ++ox) {
        for (c = 0; c < L->cin; ++c) {
            int32_t m = -32768;
            for (ky = 0; ky < L->k; ++ky) {
                const int32_t iy = t * L->s - L->p + ky;
                if (iy < 0 || iy >= L->hin) continue;
                for (kx = 0; kx < L->kw; ++kx) {
                    const int32_t ix = ox * L->s - L->p + kx;
                    int32_t v;
                    if (ix < 0 || ix >= L->win) continue;
                    v = *at(x, iy * si + ix * L->cin + c);
                    if (v > m) m = v;
                }
            }
            if (m < L->act_min) m = L->act_min;
            if (m > L->act_max) m = L->act_max;
            dst[ox * L->cin + c] = (int8_t)m;
        }
    }
}
""",
}

_ROW_FN = {"conv": "conv_row", "pw": "conv_row", "dw": "dw_row", "fc": "fc_row"}


def _row_kernel(layer: Layer) -> tuple[str, str]:
    """(kernel key, C function) computing one output row of `layer` (add excluded)."""
    if layer.kind == "pool":
        key = "avgpool" if layer.pool == "avg" else "maxpool"
        return key, f"{key}_row"
    if layer.kind in _ROW_FN:
        return ("conv" if layer.kind == "pw" else layer.kind), _ROW_FN[layer.kind]
    raise UserError(f"codegen: layer {layer.name!r}: kind {layer.kind!r} has no C row kernel")


# -- array emission --------------------------------------------------------------------------------

def _c_array(ctype: str, name: str, values: Iterable[int], per_line: int = 24) -> str:
    vals = [str(int(v)) for v in values]
    if not vals:
        vals = ["0"]
    lines = [", ".join(vals[i: i + per_line]) for i in range(0, len(vals), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(vals)}] = {{\n    {body}\n}};\n"


_OCTAL = tuple(f"\\{b:03o}" for b in range(256))


def _c_int8_string(name: str, values: np.ndarray) -> str:
    """int8 weights as octal string literals: the same bytes as a brace list, parsed ~4x faster by gcc.

    Literals longer than 4095 bytes draw a warning only under -Wpedantic (C99's minimum translation limit);
    gcc, clang and arm-none-eabi-gcc accept them.
    """
    raw = np.ascontiguousarray(values, dtype=np.int8).view(np.uint8).ravel()
    chunks = []
    step = 64
    for i in range(0, raw.size, step):
        chunks.append('"' + "".join(map(_OCTAL.__getitem__, raw[i: i + step].tolist())) + '"')
    body = "\n    ".join(chunks) if chunks else '""'
    # sized exactly: C drops the literal's terminating NUL when the array has no room for it
    return f"static const int8_t {name}[{max(raw.size, 1)}] = \n    {body};\n"


def _check_layer(layer: Layer) -> None:
    if layer.quant is None:
        raise UserError(f"codegen: layer {layer.name!r} has no int8 parameters; quantise the IR first")
    if layer.kind in ("conv", "pw", "dw", "fc"):
        red = layer.in_bytes if layer.kind == "fc" else layer.k * layer.kw * (1 if layer.kind == "dw" else layer.cin)
        if red > MAX_REDUCTION:
            raise UserError(f"codegen: layer {layer.name!r} sums {red} products; int32 accumulation is exact "
                            f"only up to {MAX_REDUCTION}")
    if layer.kind == "add" and len(layer.quant.in_zp) != 2:
        raise UserError(f"codegen: add layer {layer.name!r} needs two input zero points")


def _layer_struct(i: int, layer: Layer, out: list[str]) -> str:
    """Emit layer i's constant arrays and struct into `out`; return the struct's C name."""
    q = layer.quant
    w = b = m = s = "0"
    if q.weight is not None:
        w = f"w{i}"
        out.append(_c_int8_string(w, q.weight))
    if q.bias is not None:
        b = f"b{i}"
        out.append(_c_array("int32_t", b, q.bias))
    if q.multiplier.size:
        m, s = f"m{i}", f"s{i}"
        out.append(_c_array("int32_t", m, q.multiplier))
        out.append(_c_array("int32_t", s, q.shift))
    zp2 = q.in_zp[1] if len(q.in_zp) > 1 else 0
    fields = [layer.hin, layer.win, layer.cin, layer.hout, layer.wout, layer.cout, layer.k, layer.kw, layer.s,
              layer.p, q.in_zp[0], zp2, q.out_zp, q.act_min, q.act_max]
    name = f"L{i}"
    out.append(f"/* layer {i}: {_comment(layer.name)} ({layer.kind}{' ' + layer.pool if layer.pool else ''}"
               f"{', ' + layer.act if layer.act != 'none' else ''}) */\n"
               f"static const layer_t {name} = {{{', '.join(str(int(f)) for f in fields)}, {w}, {b}, {m}, {s}}};\n")
    return name


def _comment(text: str) -> str:
    return text.replace("*/", "* /")


# -- the planned schedule --------------------------------------------------------------------------

class _Emitter:
    """Builds ``model_invoke`` for one plan and remembers which kernels and tensor refs it uses."""

    def __init__(self, ir: IR, plan: MemoryPlan) -> None:
        self.ir = ir
        self.plan = plan
        self.kernels: set[str] = set()
        self.refs: dict[str, str] = {}  # name -> initializer
        self.body: list[str] = []
        self.uses_scratch = False

    def tensor(self, t: int) -> str:
        """The `tref_t` of pool tensor t (offset in a linear plan, arc + VA in a circular one)."""
        name = f"T{t}"
        if name not in self.refs:
            if t not in self.plan.offsets:
                raise UserError(f"codegen: plan {self.plan.planner} places no bytes for tensor {t}")
            size = self.ir.tensors[t].size
            if self.plan.mode == "linear":
                init = f"{{pool, {self.plan.offsets[t]}, 0, {max(size, 1)}, INT32_MAX}}"
            else:
                base, length = self.plan.arcs[t]
                init = f"{{pool, {base}, {self.plan.offsets[t]}, {length}, POOL_BYTES}}"
            self.refs[name] = init
        return name

    def buffer(self, name: str, offset: int, length: int) -> str:
        """A ref to a row buffer in scratch: index i lands in slot i mod length."""
        self.uses_scratch = True
        self.refs.setdefault(name, f"{{scratch, {offset}, 0, {max(length, 1)}, INT32_MAX}}")
        return name

    def emit(self, line: str) -> None:
        self.uses_scratch |= "scratch" in line
        self.body.append("    " + line)

    def step_layer(self, li: int, circular: bool) -> None:
        layer = self.ir.layers[li]
        x = self.tensor(layer.inputs[0])
        y = self.tensor(layer.output)
        so = layer.so
        dst = "scratch" if circular else f"at(&{y}, t * {so})"
        self.emit(f"/* {_comment(layer.name)}: {layer.kind} {layer.hin}x{layer.win}x{layer.cin} -> "
                  f"{layer.hout}x{layer.wout}x{layer.cout} */")
        if layer.kind == "add":
            self.kernels.add("add")
            x2 = self.tensor(layer.inputs[1])
            call = f"add_row(&L{li}, &{x}, &{x2}, t, {dst});"
        else:
            key, fn = _row_kernel(layer)
            self.kernels.add(key)
            call = f"{fn}(&L{li}, &{x}, t, {dst});"
        store = f" store_row(&{y}, t * {so}, scratch, {so});" if circular else ""
        self.emit(f"for (t = 0; t < {layer.hout}; ++t) {{ {call}{store} }}")

    def step_inplace_dw(self, li: int) -> None:
        layer = self.ir.layers[li]
        if self.plan.offsets[layer.output] != self.plan.offsets[layer.inputs[0]]:
            raise UserError(f"codegen: in-place step {layer.name!r} does not share its input's buffer")
        self.kernels.add("inplace_dw")
        x, y = self.tensor(layer.inputs[0]), self.tensor(layer.output)
        self.emit(f"/* {_comment(layer.name)}: in-place depthwise {layer.hin}x{layer.win}x{layer.cin} -> "
                  f"{layer.hout}x{layer.wout}x{layer.cout} */")
        self.emit(f"dw_inplace(&L{li}, &{x}, &{y}, scratch);")

    def step_fused(self, block: IBBlock) -> None:
        """expand 1x1 -> dw -> project 1x1 [+ add], one output row at a time (executor._fused_ib)."""
        ir = self.ir
        dw = ir.layers[block.dw]
        expand = ir.layers[block.expand] if block.expand is not None else None
        add = ir.layers[block.add] if block.add is not None else None
        last = ir.layers[block.last]
        x = self.tensor(block.block_input)
        y = self.tensor(last.output)
        self.kernels.update({"dw", "conv"})
        used = 0
        k = dw.k
        self.emit(f"/* fused IB block {_comment(ir.layers[block.first].name)} .. {_comment(last.name)}: "
                  f"{'expand, ' if expand else ''}dw {dw.k}x{dw.kw}/{dw.s}, project{', add' if add else ''} */")
        self.emit("{")
        if expand is not None:
            row_e = dw.win * dw.cin
            src = self.buffer(f"LB{block.first}", 0, k * row_e)
            used = k * row_e
        else:
            src = x
        dwr = self.buffer(f"DR{block.first}", used, dw.so)
        tile_off = used + dw.so
        if expand is not None:
            self.emit("    int32_t hi, done = 0;")
        self.emit(f"    for (t = 0; t < {last.hout}; ++t) {{")
        if expand is not None:
            self.emit(f"        hi = t * {dw.s} - {dw.p} + {dw.k}; if (hi > {dw.hin}) hi = {dw.hin};")
            self.emit(f"        for (; done < hi; ++done) conv_row(&L{block.expand}, &{x}, done, "
                      f"scratch + (done % {k}) * {row_e});")
        self.emit(f"        dw_row(&L{block.dw}, &{src}, t, scratch + {used});")
        self.emit(f"        conv_row(&L{block.project}, &{dwr}, t, scratch + {tile_off});")
        if add is not None:
            self.kernels.add("add")
            tile = self.buffer(f"TL{block.first}", tile_off, last.so)
            a, b = (x, tile) if add.inputs[0] == block.block_input else (tile, x)
            self.emit(f"        add_row(&L{block.add}, &{a}, &{b}, t, scratch + {tile_off});")
        self.emit(f"        store_row(&{y}, t * {last.so}, scratch + {tile_off}, {last.so});")
        self.emit("    }")
        self.emit("}")


def _schedule(ir: IR, plan: MemoryPlan) -> _Emitter:
    em = _Emitter(ir, plan)
    blocks = {b.first: b for b in ir.blocks}
    circular = plan.mode == "circular"
    for step in plan.steps:
        if step.kind == "fused_ib":
            if not circular or step.layers[0] not in blocks:
                raise UserError(f"codegen: fused step at layer {step.layers[0]} has no IB block")
            em.step_fused(blocks[step.layers[0]])
        elif step.kind == "inplace_dw":
            if circular:
                raise UserError("codegen: in-place depthwise steps need a linear plan")
            em.step_inplace_dw(step.layers[0])
        else:
            em.step_layer(step.layers[0], circular)
    return em


# -- the file --------------------------------------------------------------------------------------

def generate_source(ir: IR, plan: MemoryPlan) -> str:
    """The text of ``model.c`` for `ir` laid out by `plan` (see the module docstring)."""
    ir.require_quantized("codegen")
    for layer in ir.layers:
        _check_layer(layer)
    pool_bytes, scratch_bytes = required_bytes(ir, plan)
    pool_bytes = max(pool_bytes, plan.peak_bytes)
    scratch_bytes = max(scratch_bytes, plan.scratch_bytes)
    em = _schedule(ir, plan)
    inp, out = ir.tensors[ir.input], ir.tensors[ir.output]
    in_ref = em.tensor(ir.input)
    out_ref = em.tensor(ir.output)

    consts: list[str] = []
    for i, layer in enumerate(ir.layers):
        _layer_struct(i, layer, consts)

    acc = dict(plan.accounting)
    head = [
        f"/* {ir.name}: int8 inference in one static pool, generated by dnninfer.memory.codegen.",
        f" * planner {plan.planner} ({plan.mode}): {plan.peak_bytes} B activation pool (peak) + "
        f"{plan.scratch_bytes} B scratch.",
        f" * accounting: input {'included' if acc.get('input_included', True) else 'excluded'}, scratch separate, "
        f"alignment {acc.get('alignment', 1)}, weights in flash.",
        " * Build (host): gcc -O2 -std=c99 -Wall -Werror -DHOST model.c -o model && ./model input.bin > output.bin",
        " * Build (MCU):  arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os --specs=nosys.specs model.c",
        " */",
    ]
    parts = ["\n".join(head), _PRELUDE]
    parts.append(f"#define POOL_BYTES {pool_bytes}\n#define SCRATCH_BYTES {scratch_bytes}\n"
                 f"#define INPUT_BYTES {inp.size}   /* {inp.h}x{inp.w}x{inp.c} HWC */\n"
                 f"#define OUTPUT_BYTES {out.size}  /* {out.h}x{out.w}x{out.c} HWC */\n\n"
                 "static int8_t pool[POOL_BYTES];  /* every activation, at its planned place */\n"
                 + ("static int8_t scratch[SCRATCH_BYTES];  /* kernel scratch: plane, row tile, line buffer */\n"
                    if em.uses_scratch else "/* no kernel scratch: every kernel writes straight into the pool */\n"))
    parts.extend(_KERNELS[k] for k in _KERNELS if k in em.kernels)
    parts.append("\n/* -- weights and requantisation constants (flash) -- */\n")
    parts.extend(consts)
    parts.append("\n/* -- tensors: where each lives in the pool (or scratch row buffers) -- */\n")
    parts.extend(f"static const tref_t {name} = {init};\n" for name, init in em.refs.items())
    parts.append(f"""
/* The input tensor is contiguous in the pool: write INPUT_BYTES (HWC int8) here before model_invoke. */
int8_t *model_input_buffer(void) {{
    return at(&{in_ref}, 0);
}}

void model_invoke(void) {{
    int32_t t;
    (void)t;
""")
    parts.append("\n".join(em.body) + "\n}\n")
    parts.append(f"""
/* The output may wrap around a circular pool: copy it out byte by byte. */
void model_get_output(int8_t *dst) {{
    int32_t i;
    for (i = 0; i < OUTPUT_BYTES; ++i) dst[i] = *at(&{out_ref}, i);
}}

int32_t model_argmax(void) {{
    int32_t i, best = 0;
    for (i = 1; i < OUTPUT_BYTES; ++i)
        if (*at(&{out_ref}, i) > *at(&{out_ref}, best)) best = i;
    return best;
}}

#ifdef HOST
int main(int argc, char **argv) {{
    static int8_t out[OUTPUT_BYTES];
    FILE *f = argc > 1 ? fopen(argv[1], "rb") : stdin;
    if (!f) {{ fprintf(stderr, "model: cannot open %s\\n", argv[1]); return 2; }}
    if (fread(model_input_buffer(), 1, INPUT_BYTES, f) != INPUT_BYTES) {{
        fprintf(stderr, "model: expected %d input bytes\\n", INPUT_BYTES);
        return 2;
    }}
    if (f != stdin) fclose(f);
    model_invoke();
    model_get_output(out);
    if (fwrite(out, 1, OUTPUT_BYTES, stdout) != OUTPUT_BYTES) return 3;
    return 0;
}}
#else
int main(void) {{  /* MCU: the input is whatever the sensor driver left in model_input_buffer() */
    model_invoke();
    return (int)model_argmax();
}}
#endif
""")
    return "".join(parts)


_HEADER = """/* API of the generated model.c (dnninfer.memory.codegen). */
#ifndef DNNINFER_MODEL_H
#define DNNINFER_MODEL_H
#include <stdint.h>
#define MODEL_POOL_BYTES {pool}
#define MODEL_SCRATCH_BYTES {scratch}
#define MODEL_INPUT_BYTES {inp}
#define MODEL_OUTPUT_BYTES {out}
int8_t *model_input_buffer(void);   /* write MODEL_INPUT_BYTES (HWC int8) here */
void model_invoke(void);
void model_get_output(int8_t *dst);  /* MODEL_OUTPUT_BYTES */
int32_t model_argmax(void);
#endif
"""


def generate(ir: IR, plan: MemoryPlan, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``model.c`` and ``model.h`` for `ir` under `plan` into `out_dir`; return the ``model.c`` path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c_path = out / "model.c"
    c_path.write_text(generate_source(ir, plan))
    pool, scratch = required_bytes(ir, plan)
    (out / "model.h").write_text(_HEADER.format(pool=max(pool, plan.peak_bytes),
                                                scratch=max(scratch, plan.scratch_bytes),
                                                inp=ir.tensors[ir.input].size, out=ir.tensors[ir.output].size))
    return c_path


# -- building and running -------------------------------------------------------------------------

def host_compiler() -> str | None:
    """The host C compiler (``$CC`` or gcc/cc on PATH), or None."""
    cc = os.environ.get("CC")
    if cc and shutil.which(cc):
        return cc
    return shutil.which("gcc") or shutil.which("cc")


def _first_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    return next((ln for ln in lines if "error" in ln), lines[0] if lines else "(no output)")


def compile_host(c_path: str | os.PathLike[str], exe: str | os.PathLike[str]) -> Path:
    """``gcc -O2 -std=c99 -Wall -Werror -DHOST``; a warning or a missing compiler is a `UserError`."""
    cc = host_compiler()
    if cc is None:
        raise UserError("codegen: no host C compiler (gcc/cc) on PATH; install gcc (`make sysdeps`)")
    proc = subprocess.run([cc, *HOST_CFLAGS, str(c_path), "-o", str(exe)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"codegen: {cc} failed on {c_path}: {_first_error(proc.stderr)}")
    return Path(exe)


def compile_and_run(c_path: str | os.PathLike[str], x: np.ndarray, *,
                    shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Build `c_path` for the host in a temp dir, feed it the int8 input `x`, return its int8 output.

    The output is flat (``OUTPUT_BYTES``) unless `shape` is given.
    """
    with tempfile.TemporaryDirectory(prefix="dnninfer-mcu-") as tmp:
        exe = compile_host(c_path, Path(tmp) / "model")
        data = np.ascontiguousarray(x, dtype=np.int8).tobytes()
        proc = subprocess.run([str(exe)], input=data, capture_output=True)
        if proc.returncode != 0:
            raise UserError(f"codegen: generated program exited {proc.returncode}: "
                            f"{proc.stderr.decode(errors='replace').strip()}")
        y = np.frombuffer(proc.stdout, dtype=np.int8).copy()
    return y.reshape(shape) if shape is not None else y


def arm_toolchain() -> tuple[str | None, str | None]:
    """(arm-none-eabi-gcc, arm-none-eabi-size) paths, or Nones."""
    return shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")


def arm_sizes(c_path: str | os.PathLike[str], cpu: str = "cortex-m4") -> tuple[dict[str, Any] | None, str]:
    """Build `c_path` for a Cortex-M (``-mcpu=cpu -mthumb -Os``, sections garbage-collected, newlib
    nosys) and return ``(sizes, reason)``.

    ``sizes``: Berkeley ``text`` (code + read-only data, i.e. weights), ``data``, ``bss``, ``rodata``
    (the part of text that is ``.rodata``), ``ram = data + bss``, ``flash = text + data``, the model's
    own ``pool``/``scratch`` symbol sizes, ``runtime_ram`` (newlib's share of RAM: ``ram - pool -
    scratch``) and ``stack_upper`` (the sum of every model function's frame from ``-fstack-usage``:
    an upper bound on the model's stack, as nothing recurses). ``None`` with the reason when the
    toolchain is missing or the build fails.
    """
    if cpu not in ARM_CPUS:
        raise UserError(f"arm_sizes: cpu expected one of {', '.join(ARM_CPUS)}, got {cpu!r}")
    gcc, size = arm_toolchain()
    if gcc is None or size is None:
        return None, "arm-none-eabi-gcc / arm-none-eabi-size not on PATH (install with `make sysdeps`)"
    with tempfile.TemporaryDirectory(prefix="dnninfer-arm-") as tmp:
        elf = Path(tmp) / "model.elf"
        cmd = [gcc, f"-mcpu={cpu}", *ARM_CFLAGS, str(Path(c_path).resolve()), "-o", str(elf)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            return None, f"arm-none-eabi-gcc failed: {_first_error(proc.stderr)}"
        berkeley = subprocess.run([size, str(elf)], capture_output=True, text=True, check=True).stdout
        sysv = subprocess.run([size, "-A", str(elf)], capture_output=True, text=True, check=True).stdout
        nm = shutil.which("arm-none-eabi-nm")
        symbols = subprocess.run([nm, "-S", str(elf)], capture_output=True, text=True).stdout if nm else ""
        stack = sum(int(m.group(1)) for su in Path(tmp).glob("*.su")
                    for m in re.finditer(r"\t(\d+)\t", su.read_text()))
    text, data, bss = (int(v) for v in berkeley.strip().splitlines()[1].split()[:3])
    sections = {}
    for line in sysv.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    syms = {}
    for line in symbols.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms[parts[3]] = int(parts[1], 16)
    pool, scratch = syms.get("pool", 0), syms.get("scratch", 0)
    return {"cpu": cpu, "text": text, "data": data, "bss": bss, "rodata": sections.get(".rodata", 0),
            "ram": data + bss, "flash": text + data, "pool": pool, "scratch": scratch,
            "runtime_ram": data + bss - pool - scratch, "stack_upper": stack}, "ok"


def check(ir: IR, plan: MemoryPlan, x: np.ndarray, out_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Generate, compile and run the C for one plan; compare with the Python pool executor.

    Returns ``{"bit_exact", "c_path", "python", "c"}`` (outputs flat int8 arrays).
    """
    from dnninfer.memory.executor import run

    py = run(ir, plan, x).ravel()
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="dnninfer-codegen-") as tmp:
            c_path = generate(ir, plan, tmp)
            c = compile_and_run(c_path, x)
            path = None
    else:
        c_path = generate(ir, plan, out_dir)
        c = compile_and_run(c_path, x)
        path = c_path
    return {"bit_exact": bool(c.shape == py.shape and np.array_equal(c, py)), "c_path": path, "python": py, "c": c}
