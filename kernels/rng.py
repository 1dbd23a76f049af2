"""Counter-based random numbers for the kernels: SplitMix64 streams, ziggurat normals, gamma and beta draws.

Each decision ``i`` gets a 64-bit key. Its uniforms are a counter-based SplitMix64
stream, ``u_j = (mix(key + (j + 1) * G) >> 11 + 0.5) * 2**-53`` (never 0 or 1), so a
batch is deterministic, independent of evaluation order, and the NumPy twins in the
tests can replay it exactly. Thompson draws are Marsaglia-Tsang gamma variates over
ziggurat normals from the same stream. Also :func:`mix_seed`, the worker's seeds from
ids and counters: the one module that holds SplitMix64's constants.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from lola.kernels.numba_config import NJIT

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0
_TWO_PI = 2.0 * math.pi

@numba.njit(**NJIT)
def mix64(z):
    """SplitMix64 finaliser (uint64 -> uint64)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


_MASK64 = 0xFFFFFFFFFFFFFFFF


def mix_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers, each folded in with SplitMix64's multipliers.

    For seeds made of ids and counters (the worker's per-batch seed); Python's ``hash()``
    is salted per process, so it cannot serve.
    """
    z = int(GOLDEN)
    for p in parts:
        z = (z ^ (p & _MASK64)) * int(_M1) & _MASK64
        z = (z ^ (z >> 27)) * int(_M2) & _MASK64
        z ^= z >> 31
    return z & 0x7FFFFFFFFFFFFFFF


@numba.njit(**NJIT)
def uniform(key, j):
    """The ``j``-th uniform in (0, 1) of the stream ``key``."""
    z = mix64(key + np.uint64(j + 1) * GOLDEN)
    return (float(z >> _S11) + 0.5) * _INV53


@numba.njit(**NJIT)
def decision_keys(seed, n):
    """Per-decision keys ``mix64(seed + (i + 1) * G)`` for a batch of ``n`` decisions."""
    keys = np.empty(n, dtype=np.uint64)
    s = np.uint64(seed)
    for i in range(n):
        keys[i] = mix64(s + np.uint64(i + 1) * GOLDEN)
    return keys


def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marsaglia & Tsang (2000) 128-layer ziggurat tables for the standard normal."""
    kn = np.zeros(128, dtype=np.int64)
    wn = np.zeros(128)
    fn = np.zeros(128)
    m1 = 2147483648.0
    dn = 3.442619855899
    tn = dn
    vn = 9.91256303526217e-3
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0] = int((dn / q) * m1)
    kn[1] = 0
    wn[0] = q / m1
    wn[127] = dn / m1
    fn[0] = 1.0
    fn[127] = math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


ZIG_KN, ZIG_WN, ZIG_FN = _ziggurat_tables()
_ZIG_R = 3.442620
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_INV32 = 1.0 / 4294967296.0


@numba.njit(**NJIT)
def _signed32(key, j):
    """The ``j``-th draw of the stream as a signed 32-bit integer (held in int64)."""
    z = mix64(key + np.uint64(j + 1) * GOLDEN) & _MASK32
    hz = np.int64(z)
    return hz - 4294967296 if hz >= 2147483648 else hz


@numba.njit(**NJIT)
def normal_from(hz, key, j):
    """Standard normal by the ziggurat from a signed 32-bit draw ``hz``; the rare slow path
    (~1.2%) reads more draws from ``key`` starting at counter ``j``. Returns (x, next j)."""
    iz = hz & 127
    if abs(hz) < ZIG_KN[iz]:
        return hz * ZIG_WN[iz], j
    while True:
        x = hz * ZIG_WN[iz]
        if iz == 0:  # the tail beyond r
            while True:
                x = -math.log(uniform(key, j)) / _ZIG_R
                y = -math.log(uniform(key, j + 1))
                j += 2
                if y + y >= x * x:
                    break
            return (_ZIG_R + x if hz > 0 else -_ZIG_R - x), j
        u = uniform(key, j)
        j += 1
        if ZIG_FN[iz] + u * (ZIG_FN[iz - 1] - ZIG_FN[iz]) < math.exp(-0.5 * x * x):
            return x, j
        hz = _signed32(key, j)
        j += 1
        iz = hz & 127
        if abs(hz) < ZIG_KN[iz]:
            return hz * ZIG_WN[iz], j


@numba.njit(**NJIT)
def normal_draw(key, j):
    """Standard normal (ziggurat) from the stream; returns (x, next j)."""
    return normal_from(_signed32(key, j), key, j + 1)


@numba.njit(**NJIT)
def gamma_draw(shape, key, j):
    """Gamma(shape, 1) by Marsaglia-Tsang; returns (draw, next counter).

    Each attempt takes one 64-bit draw: its low 32 bits feed the ziggurat normal, its
    high 32 bits the acceptance uniform ``(hi + 0.5) / 2**32``.
    """
    boost = 1.0
    if shape < 1.0:
        boost = uniform(key, j) ** (1.0 / shape)
        j += 1
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = mix64(key + np.uint64(j + 1) * GOLDEN)
        j += 1
        lo = np.int64(z & _MASK32)
        x, j = normal_from(lo - 4294967296 if lo >= 2147483648 else lo, key, j)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = (float(np.int64(z >> _S32)) + 0.5) * _INV32
        x2 = x * x
        if u < 1.0 - 0.0331 * x2 * x2:
            return d * v * boost, j
        if math.log(u) < 0.5 * x2 + d * (1.0 - v + math.log(v)):
            return d * v * boost, j


@numba.njit(**NJIT)
def beta_draw(a, b, key, j):
    """Beta(a, b) as Ga / (Ga + Gb); returns (draw, next counter)."""
    ga, j = gamma_draw(a, key, j)
    gb, j = gamma_draw(b, key, j)
    return ga / (ga + gb), j
