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
* patch plans (`dnninfer.memory.patch`): no ``scratch`` array; the prefix runs in a loop over the
  patches from per-patch tables in flash (`PatchTables`: the row and column band of every prefix
  tensor per patch row and column, where each step's output starts in the patch-buffer arc, each
  step's scratch run in the pool), with kernels that compute a column range of one output row from
  a view of a patch buffer (its first row and column, its own row stride; taps outside the tensor
  are the image-edge padding); the tail is the circular steps with their scratch runs in the pool;
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
from dataclasses import dataclass
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


# -- patch-based execution (memory/patch.py): a column range of one output row, on patch buffers --------

_PATCH_KERNELS: dict[str, str] = {
    "patch": r"""
/* -- patch-based execution (dnninfer.memory.patch.run_patch) --
 * A view of a tensor region: element (row r, column c, channel ch) of a tensor with n channels is
 * byte (r - r0) * rs + (c - c0) * n + ch of `ref`. A whole tensor in the pool: r0 = c0 = 0, rs = W * C.
 * A patch buffer (nested arc after the input): its first row and column and its own row stride
 * (columns of the patch times C). A row buffer in a kernel's run of the pool: r0 = 0 and `ref.len`
 * one row (k rows for the line buffer), so row r lands in slot r mod (len / rs). Kernels below
 * compute output row t, columns [o0, o1), of a layer from such a view; taps outside the tensor
 * (rows 0..hin, columns 0..win) are the zero padding at the image edge and add nothing. */
typedef struct {
    tref_t ref;
    int32_t r0, c0, rs;
} view_t;

static inline int32_t vix(const view_t *v, int32_t r, int32_t c, int32_t n) {
    return (r - v->r0) * v->rs + (c - v->c0) * n;
}
static inline int32_t pwindow_sum(const layer_t *L, const view_t *x, int32_t t, int32_t ox, int32_t c0,
                                  int32_t n, const int8_t *w0, int32_t w_tap, int32_t w_ch) {
    int32_t sum = 0, ky, kx, ci;
    for (ky = 0; ky < L->k; ++ky) {
        const int32_t iy = t * L->s - L->p + ky;
        if (iy < 0 || iy >= L->hin) continue;
        for (kx = 0; kx < L->kw; ++kx) {
            const int32_t ix = ox * L->s - L->p + kx;
            const int8_t *wp = w0 + (ky * L->kw + kx) * w_tap;
            int32_t base;
            if (ix < 0 || ix >= L->win) continue;
            base = vix(x, iy, ix, L->cin) + c0;
            for (ci = 0; ci < n; ++ci)
                sum += ((int32_t)*at(&x->ref, base + ci) - L->zp_in) * (int32_t)wp[ci * w_ch];
        }
    }
    return sum;
}
/* store n bytes of output row t from column o0 on */
static void store_vrow(const view_t *y, int32_t t, int32_t o0, int32_t cn, const int8_t *src, int32_t n) {
    const int32_t base = vix(y, t, o0, cn);
    int32_t j;
    for (j = 0; j < n; ++j) *at(&y->ref, base + j) = src[j];
}
""",
    "pconv": r"""
/* conv k x kw (and 1x1 pw) on a view: output row t, columns [o0, o1) into dst[(o1 - o0) * cout] */
static void pconv_row(const layer_t *L, const view_t *x, int32_t t, int32_t o0, int32_t o1, int8_t *dst) {
    int32_t ox, co;
    for (ox = o0; ox < o1; ++ox)
        for (co = 0; co < L->cout; ++co) {
            const int32_t sum = pwindow_sum(L, x, t, ox, 0, L->cin, L->w + co, L->cin * L->cout, L->cout);
            dst[(ox - o0) * L->cout + co] = finish(L, (int64_t)L->bias[co] + sum, co);
        }
}
""",
    "pdw": r"""
/* depthwise k x kw on a view: output row t, columns [o0, o1) into dst[(o1 - o0) * c] */
static void pdw_row(const layer_t *L, const view_t *x, int32_t t, int32_t o0, int32_t o1, int8_t *dst) {
    const int32_t c_n = L->cout;
    int32_t ox, c;
    for (ox = o0; ox < o1; ++ox)
        for (c = 0; c < c_n; ++c) {
            const int32_t sum = pwindow_sum(L, x, t, ox, c, 1, L->w + c, c_n, 0);
            dst[(ox - o0) * c_n + c] = finish(L, (int64_t)L->bias[c] + sum, c);
        }
}
""",
    "padd": r"""
/* TFLite int8 ADD on views: row t, columns [o0, o1); reads both inputs of an element before writing it */
static void padd_row(const layer_t *L, const view_t *a, const view_t *b, int32_t t, int32_t o0, int32_t o1,
                     int8_t *dst) {
    const int32_t n = (o1 - o0) * L->cout, ia = vix(a, t, o0, L->cout), ib = vix(b, t, o0, L->cout);
    int32_t j;
    for (j = 0; j < n; ++j) {
        const int64_t xa = (int64_t)((int32_t)*at(&a->ref, ia + j) - L->zp_in) * ((int64_t)1 << 20);
        const int64_t xb = (int64_t)((int32_t)*at(&b->ref, ib + j) - L->zp_in2) * ((int64_t)1 << 20);
        const int64_t sa = requant(xa, L->m0[0], L->sh[0]), sb = requant(xb, L->m0[1], L->sh[1]);
        int64_t y = requant(sa + sb, L->m0[2], L->sh[2]);
        y += L->zp_out;
        if (y < L->act_min) y = L->act_min;
        if (y > L->act_max) y = L->act_max;
        dst[j] = (int8_t)y;
    }
}
""",
    "pavgpool": r"""
/* average pool on a view (no padding): output row t, columns [o0, o1) */
static void pavgpool_row(const layer_t *L, const view_t *x, int32_t t, int32_t o0, int32_t o1, int8_t *dst) {
    int32_t ox, c, ky, kx, rows = 0;
    for (ky = 0; ky < L->k; ++ky) {
        const int32_t iy = t * L->s + ky;
        if (iy >= 0 && iy < L->hin) ++rows;
    }
    for (ox = o0; ox < o1; ++ox) {
        for (c = 0; c < L->cin; ++c) {
            int64_t acc = 0, y;
            const int64_t count = (int64_t)rows * L->kw, half = count / 2;
            for (ky = 0; ky < L->k; ++ky) {
                const int32_t iy = t * L->s + ky;
                if (iy < 0 || iy >= L->hin) continue;
                for (kx = 0; kx < L->kw; ++kx) acc += *at(&x->ref, vix(x, iy, ox * L->s + kx, L->cin) + c);
            }
            y = acc > 0 ? (acc + half) / count : (acc - half) / count;
            if (y < L->act_min) y = L->act_min;
            if (y > L->act_max) y = L->act_max;
            dst[(ox - o0) * L->cin + c] = (int8_t)y;
        }
    }
}
""",
    "pmaxpool": r"""
/* max pool on a view: output row t, columns [o0, o1); padding never wins */
static void pmaxpool_row(const layer_t *L, const view_t *x, int32_t t, int32_t o0, int32_t o1, int8_t *dst) {
    int32_t ox, c, ky, kx;
    for (ox = o0; ox < o1; ++ox) {
        for (c = 0; c < L->cin; ++c) {
            int32_t m = -32768;
            for (ky = 0; ky < L->k; ++ky) {
                const int32_t iy = t * L->s - L->p + ky;
                if (iy < 0 || iy >= L->hin) continue;
                for (kx = 0; kx < L->kw; ++kx) {
                    const int32_t ix = ox * L->s - L->p + kx;
                    int32_t v;
                    if (ix < 0 || ix >= L->win) continue;
                    v = *at(&x->ref, vix(x, iy, ix, L->cin) + c);
                    if (v > m) m = v;
                }
            }
            if (m < L->act_min) m = L->act_min;
            if (m > L->act_max) m = L->act_max;
            dst[(ox - o0) * L->cin + c] = (int8_t)m;
        }
    }
}
""",
}
_KERNELS.update(_PATCH_KERNELS)


def _patch_kernel(layer: Layer) -> tuple[str, str]:
    """(kernel key, C function) computing a column range of one output row of `layer` on views."""
    if layer.kind == "pool":
        key = "pavgpool" if layer.pool == "avg" else "pmaxpool"
    elif layer.kind in ("conv", "pw"):
        key = "pconv"
    elif layer.kind in ("dw", "add"):
        key = "p" + layer.kind
    else:
        raise UserError(f"codegen: layer {layer.name!r}: kind {layer.kind!r} cannot run patch by patch")
    return key, f"{key}_row"




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

@dataclass(frozen=True)
class PatchTables:
    """What the generated C of a ``patch`` plan reads per patch: `patch.run_patch`'s layout as tables.

    ``tensors``: the prefix tensors in table order (the input, then each prefix layer's output);
    ``rows[i][m]``: rows ``[lo, hi)`` of tensor ``m`` that patch row ``i`` computes (halo included),
    ``cols[j][m]``: its columns for patch column ``j`` (receptive fields, `graph.receptive`);
    ``local_va[k][u]``: where prefix step ``u``'s output starts in the patch-buffer arc for patch
    ``k = i*q + j`` (every step but the last, which writes the exit tensor in place);
    ``scratch_at[k][u]``: the pool offset of step ``u``'s scratch run (tile, depthwise row, line buffer).
    """

    tensors: tuple[int, ...]
    rows: tuple[tuple[tuple[int, int], ...], ...]
    cols: tuple[tuple[tuple[int, int], ...], ...]
    local_va: tuple[tuple[int, ...], ...]
    scratch_at: tuple[tuple[int, ...], ...]


def patch_tables(ir: IR, plan: MemoryPlan) -> PatchTables:
    """The per-patch tables of a ``patch`` plan, from the same geometry the Python executor walks."""
    from dnninfer.memory.patch import plan_geometry

    g = plan_geometry(ir, plan)
    tensors = (ir.input, *(ir.layers[li].output for li in g.layers))
    return PatchTables(tensors, tuple(tuple(rg[t] for t in tensors) for rg in g.rg),
                       tuple(tuple(cg[t] for t in tensors) for cg in g.cg), plan.patch.local_va, plan.patch.scratch_at)


def _c_table(name: str, values: Any) -> str:
    """A ``static const int32_t`` array of any rank from nested sequences of ints (flash)."""
    dims = []
    v = values
    while isinstance(v, (list, tuple)):
        dims.append(len(v))
        v = v[0] if len(v) else 0

    def body(x: Any, depth: int) -> str:
        if not isinstance(x, (list, tuple)):
            return str(int(x))
        sep = ",\n    " if depth == 0 and len(dims) > 1 else ", "
        return "{" + sep.join(body(e, depth + 1) for e in x) + "}"

    return f"static const int32_t {name}{''.join(f'[{d}]' for d in dims)} = {body(values, 0)};\n"


class _Emitter:
    """Builds ``model_invoke`` for one plan and remembers which kernels and tensor refs it uses.

    Kernel scratch is the ``scratch`` array from offset 0, or (patch plans) a run of the pool that
    starts at ``scratch_at``: `sp` and `buffer` address it either way.
    """

    def __init__(self, ir: IR, plan: MemoryPlan) -> None:
        self.ir = ir
        self.plan = plan
        self.kernels: set[str] = set()
        self.refs: dict[str, str] = {}  # name -> initializer
        self.views: dict[str, str] = {}  # name -> initializer (patch plans: whole-tensor views)
        self.tables: list[str] = []  # patch plans: per-patch tables
        self.body: list[str] = []
        self.uses_scratch = False
        self.scratch_in: str = "scratch"  # the array kernel scratch lives in ("pool" for patch plans)
        self.scratch_at = 0

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

    def view(self, t: int) -> str:
        """The `view_t` of a whole pool tensor (rows of W * C bytes from row 0, column 0)."""
        name = f"V{t}"
        if name not in self.views:
            self.views[name] = f"{{{self.refs[self.tensor(t)]}, 0, 0, {self.ir.tensors[t].row_bytes}}}"
        return name

    def sp(self, offset: int = 0) -> str:
        """A C pointer to byte ``offset`` of the current step's scratch."""
        self.uses_scratch |= self.scratch_in == "scratch"
        at = self.scratch_at + offset
        return f"{self.scratch_in} + {at}" if at else self.scratch_in

    def buffer(self, name: str, offset: int, length: int) -> str:
        """A ref to a row buffer in scratch: index i lands in slot i mod length."""
        self.uses_scratch |= self.scratch_in == "scratch"
        self.refs.setdefault(name, f"{{{self.scratch_in}, {self.scratch_at + offset}, 0, {max(length, 1)}, INT32_MAX}}")
        return name

    def emit(self, line: str) -> None:
        self.body.append("    " + line)

    def step_layer(self, li: int, circular: bool) -> None:
        layer = self.ir.layers[li]
        x = self.tensor(layer.inputs[0])
        y = self.tensor(layer.output)
        so = layer.so
        dst = self.sp() if circular else f"at(&{y}, t * {so})"
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
        store = f" store_row(&{y}, t * {so}, {dst}, {so});" if circular else ""
        self.emit(f"for (t = 0; t < {layer.hout}; ++t) {{ {call}{store} }}")

    def step_inplace_dw(self, li: int) -> None:
        layer = self.ir.layers[li]
        if self.plan.offsets[layer.output] != self.plan.offsets[layer.inputs[0]]:
            raise UserError(f"codegen: in-place step {layer.name!r} does not share its input's buffer")
        self.kernels.add("inplace_dw")
        x, y = self.tensor(layer.inputs[0]), self.tensor(layer.output)
        self.emit(f"/* {_comment(layer.name)}: in-place depthwise {layer.hin}x{layer.win}x{layer.cin} -> "
                  f"{layer.hout}x{layer.wout}x{layer.cout} */")
        self.emit(f"dw_inplace(&L{li}, &{x}, &{y}, {self.sp()});")

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
                      f"{self.sp()} + (done % {k}) * {row_e});")
        self.emit(f"        dw_row(&L{block.dw}, &{src}, t, {self.sp(used)});")
        self.emit(f"        conv_row(&L{block.project}, &{dwr}, t, {self.sp(tile_off)});")
        if add is not None:
            self.kernels.add("add")
            tile = self.buffer(f"TL{block.first}", tile_off, last.so)
            a, b = (x, tile) if add.inputs[0] == block.block_input else (tile, x)
            self.emit(f"        add_row(&L{block.add}, &{a}, &{b}, t, {self.sp(tile_off)});")
        self.emit(f"        store_row(&{y}, t * {last.so}, {self.sp(tile_off)}, {last.so});")
        self.emit("    }")
        self.emit("}")

    # -- patch plans -------------------------------------------------------------------------------

    def step_patched(self, tab: PatchTables) -> None:
        """The patched prefix (`patch.run_patch`): for each patch, row-major, each prefix step computes
        its rows x columns of the patch (halo included) from its input's patch buffer (the global input
        for the first step) into its own (the global exit tensor for the last); bands, buffer starts
        and scratch runs come from the per-patch tables."""
        from dnninfer.memory.vmcu import chain_units

        ir, spec = self.ir, self.plan.patch
        units = chain_units(ir, fused=True)[: spec.n]
        n, p, q = spec.n, spec.p, spec.q
        idx = {t: m for m, t in enumerate(tab.tensors)}
        self.kernels.add("patch")
        self.tables.append(f"/* patch row i, prefix tensor m (order: {', '.join(f'#{t}' for t in tab.tensors)}): "
                           "rows [lo, hi) it holds */\n")
        self.tables.append(_c_table("PATCH_ROWS", tab.rows))
        self.tables.append("/* patch column j, prefix tensor m: columns [lo, hi) */\n")
        self.tables.append(_c_table("PATCH_COLS", tab.cols))
        self.tables.append("/* patch k = i * q + j, prefix step u: pool offset of its scratch run */\n")
        self.tables.append(_c_table("PATCH_SCRATCH", tab.scratch_at))
        if n > 1:
            self.tables.append("/* patch k, prefix step u < n - 1: where its output starts in the patch-buffer "
                               "arc */\n")
            self.tables.append(_c_table("PATCH_VA", tab.local_va))
        base, sb = spec.local_arc
        exit_t = ir.tensors[spec.exit]
        self.emit(f"/* patched prefix: the first {n} steps as {p}x{q} patches of {_comment(exit_t.name)} "
                  f"({exit_t.h}x{exit_t.w}x{exit_t.c}), row-major; halos recomputed; patch buffers in the arc "
                  f"({base}, {sb}) */")
        self.emit("{")
        self.emit("    int32_t pi, pj;")
        self.emit(f"    for (pi = 0; pi < {p}; ++pi) for (pj = 0; pj < {q}; ++pj) {{")
        self.emit(f"        const int32_t pk = pi * {q} + pj;")
        self.emit("        const int32_t (*R)[2] = PATCH_ROWS[pi], (*C)[2] = PATCH_COLS[pj];")
        views: dict[int, str] = {ir.input: self.view(ir.input), spec.exit: self.view(spec.exit)}
        for u, unit in enumerate(units[:-1]):
            m, c = idx[unit.output], ir.tensors[unit.output].c
            views[unit.output] = f"B{u}"
            self.emit(f"        const view_t B{u} = {{{{pool, {base}, PATCH_VA[pk][{u}], {sb}, POOL_BYTES}}, "
                      f"R[{m}][0], C[{m}][0], (C[{m}][1] - C[{m}][0]) * {c}}};")
        for u, unit in enumerate(units):
            self.emit(f"        {{  /* step {u}: {_comment(ir.layers[unit.layers[0]].name)}"
                      f"{' .. ' + _comment(ir.layers[unit.layers[-1]].name) if len(unit.layers) > 1 else ''} */")
            self.emit(f"            const int32_t sc = PATCH_SCRATCH[pk][{u}];")
            if unit.block is None:
                self._patch_layer(unit.layers[0], views, idx)
            else:
                self._patch_fused(unit.block, views, idx)
            self.emit("        }")
        self.emit("    }")
        self.emit("}")

    def _patch_layer(self, li: int, views: dict[int, str], idx: dict[int, int]) -> None:
        layer = self.ir.layers[li]
        key, fn = _patch_kernel(layer)
        self.kernels.add(key)
        m = idx[layer.output]
        ins = ", ".join(f"&{views[t]}" for t in layer.inputs)
        self.emit(f"            for (t = R[{m}][0]; t < R[{m}][1]; ++t) {{")
        self.emit(f"                {fn}(&L{li}, {ins}, t, C[{m}][0], C[{m}][1], pool + sc);")
        self.emit(f"                store_vrow(&{views[layer.output]}, t, C[{m}][0], {layer.cout}, pool + sc, "
                  f"(C[{m}][1] - C[{m}][0]) * {layer.cout});")
        self.emit("            }")

    def _patch_fused(self, block: IBBlock, views: dict[int, str], idx: dict[int, int]) -> None:
        """`patch._run_fused` on one patch: expanded rows of the patch's width in a k-row line buffer."""
        ir = self.ir
        dw = ir.layers[block.dw]
        expand = ir.layers[block.expand] if block.expand is not None else None
        add = ir.layers[block.add] if block.add is not None else None
        last = ir.layers[block.last]
        x, y = views[block.block_input], views[last.output]
        m = idx[last.output]
        self.kernels.update({"pdw", "pconv"})
        ind = "            "
        self.emit(f"{ind}const int32_t o0 = C[{m}][0], o1 = C[{m}][1], wo = o1 - o0;")
        used = "0"
        src = x
        if expand is not None:
            me = idx[dw.inputs[0]]
            self.emit(f"{ind}const int32_t ea = C[{me}][0], eb = C[{me}][1], rowe = (eb - ea) * {dw.cin};")
            self.emit(f"{ind}const view_t lb = {{{{pool, sc, 0, {dw.k} * rowe, INT32_MAX}}, 0, ea, rowe}};")
            self.emit(f"{ind}int32_t hi, done = R[{m}][0] * {dw.s} - {dw.p};")
            self.emit(f"{ind}if (done < 0) done = 0;")
            used, src = f"{dw.k} * rowe", "lb"
        self.emit(f"{ind}const int32_t dr = {'sc' if used == '0' else 'sc + ' + used}, tl = dr + wo * {dw.cout};")
        self.emit(f"{ind}const view_t dv = {{{{pool, dr, 0, wo * {dw.cout}, INT32_MAX}}, 0, o0, wo * {dw.cout}}};")
        if add is not None:
            self.kernels.add("padd")
            self.emit(f"{ind}const view_t tv = {{{{pool, tl, 0, wo * {last.cout}, INT32_MAX}}, 0, o0, "
                      f"wo * {last.cout}}};")
        self.emit(f"{ind}for (t = R[{m}][0]; t < R[{m}][1]; ++t) {{")
        if expand is not None:
            self.emit(f"{ind}    hi = t * {dw.s} - {dw.p} + {dw.k}; if (hi > {dw.hin}) hi = {dw.hin};")
            self.emit(f"{ind}    for (; done < hi; ++done) pconv_row(&L{block.expand}, &{x}, done, ea, eb, "
                      f"pool + sc + (done % {dw.k}) * rowe);")
        self.emit(f"{ind}    pdw_row(&L{block.dw}, &{src}, t, o0, o1, pool + dr);")
        self.emit(f"{ind}    pconv_row(&L{block.project}, &dv, t, o0, o1, pool + tl);")
        if add is not None:
            a, b = (x, "tv") if add.inputs[0] == block.block_input else ("tv", x)
            self.emit(f"{ind}    padd_row(&L{block.add}, &{a}, &{b}, t, o0, o1, pool + tl);")
        self.emit(f"{ind}    store_vrow(&{y}, t, o0, {last.cout}, pool + tl, wo * {last.cout});")
        self.emit(f"{ind}}}")


def _schedule(ir: IR, plan: MemoryPlan) -> _Emitter:
    em = _Emitter(ir, plan)
    blocks = {b.first: b for b in ir.blocks}
    circular = plan.mode in ("circular", "patch")
    steps = plan.steps
    tail_at: tuple[int, ...] = ()
    if plan.mode == "patch":
        if not steps or steps[0].kind != "patched":
            raise UserError(f"codegen: patch plan {plan.planner} does not start with its patched prefix")
        em.step_patched(patch_tables(ir, plan))
        steps, tail_at = steps[1:], plan.patch.tail_scratch_at
        em.scratch_in = "pool"  # the tail's scratch runs are in the pool too
    for j, step in enumerate(steps):
        if tail_at:
            em.scratch_at = tail_at[j]
        if step.kind == "fused_ib":
            if not circular or step.layers[0] not in blocks:
                raise UserError(f"codegen: fused step at layer {step.layers[0]} has no IB block")
            em.step_fused(blocks[step.layers[0]])
        elif step.kind == "inplace_dw":
            if circular:
                raise UserError("codegen: in-place depthwise steps need a linear plan")
            em.step_inplace_dw(step.layers[0])
        elif step.kind == "patched":
            raise UserError("codegen: a patched step may only start a patch plan")
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
        f" * accounting: input {'included' if acc.get('input_included', True) else 'excluded'}, scratch "
        f"{'inside the pool' if plan.mode == 'patch' else 'separate'}, alignment {acc.get('alignment', 1)}, "
        "weights in flash.",
        *([f" * patch-based: the first {plan.patch.n} steps as {plan.patch.p}x{plan.patch.q} patches (MAC "
             f"x{plan.patch.mac_overhead:.4f}), kernel scratch in runs of the pool."] if plan.patch else []),
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
    parts.extend(f"static const view_t {name} = {init};\n" for name, init in em.views.items())
    if em.tables:
        parts.append("\n/* -- per-patch tables (flash): bands, patch-buffer starts, scratch runs -- */\n")
        parts.extend(em.tables)
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
