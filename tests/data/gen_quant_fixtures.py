#!/usr/bin/env python3
"""Regenerates tests/data/quant_fixtures.bin, the oracle data for tests/test_quant.c.

The expected values come from the `gguf` Python package (gguf-py, the GGUF reader/writer that ships
with llama.cpp), whose quantization code is an independent numpy implementation of ggml's formats.
The C test only reads the committed .bin file, so `make test` never needs Python.

    pip install gguf numpy
    python3 tests/data/gen_quant_fixtures.py            # writes tests/data/quant_fixtures.bin

Everything is seeded, so a rerun with the same gguf/numpy versions reproduces the file byte for byte.

File format (all integers little-endian u32, floats little-endian IEEE binary32):

    header   "AGQF"  version(=1)  n_sections  note_len  note[note_len]   (note: tool versions, UTF-8)
    section  kind  type  n_elems  n_bytes  payload
             kind 1 (dequantize): raw[n_bytes] (whole blocks of `type`), then f32 expected[n_elems]
             kind 2 (quantize):   f32 input[n_elems], then raw expected[n_bytes]

`type` is the ggml type id (F16=1, Q4_0=2, ..., BF16=30). Sections follow each other without padding.
Dequantize sections use random bytes for the quants and random but finite f16 scales (normal, some
subnormal, a few zero or negative), so every bit pattern of the packed fields is exercised. Quantize
sections exist only for the types whose gguf-py quantizer mirrors ggml's reference quantizer
(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16); the C reference quantizers must reproduce them exactly.
"""

import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quant_fixtures.bin")

KIND_DEQUANT = 1
KIND_QUANT = 2

# Byte offsets of the f16 scale fields inside one block, per type (these must stay sane).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def random_f16_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """n f16 scales: mostly normal with magnitudes 2^-14..2^1, some subnormal, zero or negative."""
    mag = np.exp2(rng.uniform(-14.0, 1.0, n)).astype(np.float32)
    sign = np.where(rng.random(n) < 0.25, -1.0, 1.0).astype(np.float32)
    vals = (mag * sign).astype(np.float16)
    kind = rng.random(n)
    sub = (rng.integers(1, 0x400, n, dtype=np.uint16)).view(np.float16)  # f16 subnormals
    vals = np.where(kind < 0.06, sub, vals)
    vals = np.where((kind >= 0.06) & (kind < 0.09), np.float16(0.0), vals)
    assert np.all(np.isfinite(vals))
    return vals


def dequant_section(rng: np.random.Generator, qtype: T, n_blocks: int) -> bytes:
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        raw[:, off : off + 2] = random_f16_scales(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    expected = gguf.quants.dequantize(raw.reshape(-1), qtype).astype("<f4", copy=False)
    assert expected.size == n_blocks * block_elems
    assert np.all(np.isfinite(expected)), qtype.name
    return pack(KIND_DEQUANT, qtype, expected.size, raw.tobytes(), expected.tobytes(), first_raw=True)


def float_dequant_section(rng: np.random.Generator, qtype: T, n: int) -> bytes:
    """F16/BF16 -> f32 on random bit patterns plus edge values (NaN only for BF16, see below)."""
    bits = rng.integers(0, 0x10000, n, dtype=np.uint32).astype(np.uint16)
    edges = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00,
             0xFC00, 0x3555, 0x7F80, 0xFF80, 0x0080, 0x007F, 0x3F80]
    bits[: len(edges)] = edges
    if qtype == T.F16:
        # f16 NaN payloads are excluded: hardware and libraries differ on quieting them.
        nan = ((bits & 0x7C00) == 0x7C00) & ((bits & 0x03FF) != 0)
        bits = np.where(nan, bits & 0x83FF, bits).astype(np.uint16)
        expected = bits.view(np.float16).astype(np.float32)
    else:
        expected = gguf.quants.dequantize(bits.view(np.uint8), qtype)
    expected = expected.astype("<f4", copy=False)
    return pack(KIND_DEQUANT, qtype, n, bits.astype("<u2").tobytes(), expected.tobytes(), first_raw=True)


def quant_inputs(rng: np.random.Generator, n_blocks: int, block: int) -> np.ndarray:
    """Rows of blocks with varied shapes: normal data at many scales, outliers, constants, zeros."""
    x = rng.standard_normal((n_blocks, block)).astype(np.float32)
    x *= np.exp2(rng.uniform(-12.0, 8.0, (n_blocks, 1))).astype(np.float32)
    x[1] = 0.0  # an all-zero block
    x[2] = np.float32(0.37)  # a constant block (Q4_1/Q5_1: max == min)
    x[3, 5] = np.float32(-50.0) * np.abs(x[3]).max()  # one dominant negative outlier
    x[4] = np.abs(x[4])  # all positive
    x[5] = -np.abs(x[5])  # all negative
    x[6, :] = np.float32(1.0)
    x[6, 7] = np.float32(-1.0)  # equal magnitudes with opposite signs: first index wins
    x[7] = rng.integers(-8, 8, block).astype(np.float32)  # exact grid values, exercises ties
    return x


def quant_section(rng: np.random.Generator, qtype: T, n_blocks: int) -> bytes:
    block_elems, _ = GGML_QUANT_SIZES[qtype]
    x = quant_inputs(rng, n_blocks, block_elems)
    expected = gguf.quants.quantize(x, qtype)
    return pack(KIND_QUANT, qtype, x.size, x.astype("<f4").tobytes(), expected.tobytes(), first_raw=False)


def float_quant_section(rng: np.random.Generator, qtype: T, n: int) -> bytes:
    """f32 -> F16/BF16, round to nearest even, on random bit patterns and edge values."""
    bits = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    # Half the values in the range where F16 is interesting (subnormals to overflow).
    near = np.exp2(rng.uniform(-26.0, 17.0, n // 2)).astype(np.float32) * np.where(
        rng.random(n // 2) < 0.5, -1, 1).astype(np.float32)
    bits[: n // 2] = near.view(np.uint32)
    edges = [0x00000000, 0x80000000, 0x3F800000, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FFFFF,
             0x47800000, 0x38800000, 0x387FFFFF, 0x33800000, 0x33000000, 0x33000001, 0x32FFFFFF,
             0x33C00000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x00000001, 0x3F808000, 0x3F818000,
             0x3F808001, 0x3F7FFFFF, 0x7F7F8000, 0x3A001000, 0x3A003000, 0x3A002000]
    bits[: len(edges)] = edges
    nan = ((bits & 0x7F800000) == 0x7F800000) & ((bits & 0x007FFFFF) != 0)
    if qtype == T.F16:
        bits = np.where(nan, bits & 0xFF800000, bits).astype(np.uint32)  # no NaN: see above
        with np.errstate(over="ignore"):  # overflow to infinity is one of the cases under test
            expected = bits.view(np.float32).astype(np.float16).view(np.uint8)
    else:
        bits[len(edges) : len(edges) + 4] = [0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FFFFFFF]
        expected = gguf.quants.quantize(bits.view(np.float32), qtype)
    assert expected.dtype == np.uint8 and expected.size == 2 * n
    return pack(KIND_QUANT, qtype, n, bits.astype("<u4").tobytes(), expected.tobytes(), first_raw=False)


def pack(kind: int, qtype: T, n_elems: int, a: bytes, b: bytes, first_raw: bool) -> bytes:
    n_bytes = len(a) if first_raw else len(b)
    return struct.pack("<4I", kind, int(qtype), n_elems, n_bytes) + a + b


def main() -> int:
    if sys.byteorder != "little":
        print("this generator assumes a little-endian host", file=sys.stderr)
        return 1
    rng = np.random.default_rng(20250601)
    sections = []
    for t in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        sections.append(dequant_section(rng, t, 64))
    for t in (T.Q4_K, T.Q5_K, T.Q6_K):
        sections.append(dequant_section(rng, t, 12))
    for t in (T.F16, T.BF16):
        sections.append(float_dequant_section(rng, t, 2048))
    for t in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        sections.append(quant_section(rng, t, 64))
    for t in (T.F16, T.BF16):
        sections.append(float_quant_section(rng, t, 2048))

    note = f"gguf-py {getattr(gguf, '__version__', '?')}, numpy {np.__version__}".encode()
    try:
        from importlib.metadata import version
        note = f"gguf-py {version('gguf')}, numpy {np.__version__}".encode()
    except Exception:
        pass
    with open(OUT, "wb") as f:
        f.write(b"AGQF" + struct.pack("<3I", 1, len(sections), len(note)) + note)
        for s in sections:
            f.write(s)
    print(f"wrote {OUT}: {len(sections)} sections, {os.path.getsize(OUT)} bytes ({note.decode()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
