"""Label Studio's brush RLE: the format of a ``BrushLabels`` region's ``value.rle``.

The mask is stored as its RGBA pixels, row by row (H x W x 4 bytes; Label Studio's editor
draws the alpha channel), compressed into a bit stream and sent as a list of byte values:

* a header: the number of values (32 bits), the word size minus one (5 bits; 8 for bytes) and
  four run-length field sizes minus one (4 bits each; 3, 4, 8 and 16 as Label Studio writes);
* then chunks until all values are written: a flag bit (1: one value repeated, 0: literal
  values), 2 bits choosing one of the four field sizes, the chunk length minus one in that many
  bits, then the repeated value once (flag 1) or each value in turn (flag 0), one word each;
* the stream is padded with zero bits to whole bytes.

Masks are runs of two values, so the encoder writes only repeat chunks; the decoder reads both
kinds, as Label Studio's own brush strokes use literal chunks too.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

WORD_BITS = 8
# Bits of a chunk's length field, chosen by the chunk's 2-bit selector (Label Studio's choice).
RUN_FIELD_BITS: Tuple[int, int, int, int] = (3, 4, 8, 16)
MAX_RUN = 1 << RUN_FIELD_BITS[-1]
CHANNELS = 4


class RleError(ValueError):
    """A brush RLE that does not decode (truncated, or not of the image's size)."""


def mask_to_rle(mask: np.ndarray, value: int = 255) -> List[int]:
    """The brush RLE (a list of byte values) of ``mask`` (H x W, nonzero = in the region), the
    region's pixels set to ``value`` in all four RGBA channels and the others to 0."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {mask.shape}")
    if not 0 < value < 1 << WORD_BITS:
        raise ValueError(f"value {value} must lie in 1..{(1 << WORD_BITS) - 1}")
    flat = (mask.reshape(-1) != 0)
    count = flat.size * CHANNELS
    # Runs of the flattened pixels; each pixel is four equal values, so a run of n pixels is a
    # run of 4n values.
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [flat.size]))) * CHANNELS
    values = np.where(flat[starts], value, 0) if flat.size else np.zeros(0, dtype=np.int64)
    header = f"{count:032b}{WORD_BITS - 1:05b}" + "".join(f"{bits - 1:04b}" for bits in RUN_FIELD_BITS)
    parts = [header]
    for length, word in zip(lengths.tolist(), values.tolist()):
        word_bits = f"{word:08b}"
        while length > 0:
            piece = min(length, MAX_RUN)
            selector = next(i for i, bits in enumerate(RUN_FIELD_BITS) if piece - 1 < 1 << bits)
            parts.append(f"1{selector:02b}{piece - 1:0{RUN_FIELD_BITS[selector]}b}{word_bits}")
            length -= piece
    bits = "".join(parts)
    bits += "0" * (-len(bits) % 8)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


def rle_to_rgba(rle: Sequence[int]) -> np.ndarray:
    """The flat uint8 values (H * W * 4 RGBA) a brush RLE holds."""
    try:
        data = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError):
        raise RleError("brush RLE must be a list of byte values (0..255)") from None
    if data.ndim != 1 or ((data < 0) | (data > 255)).any():
        raise RleError("brush RLE must be a list of byte values (0..255)")
    bits = np.unpackbits(data.astype(np.uint8))
    reader = _BitReader(bits)
    count = reader.read(32)
    word = reader.read(5) + 1
    fields = [reader.read(4) + 1 for _ in range(4)]
    if word > 8:
        raise RleError(f"brush RLE with {word}-bit values; Label Studio's masks use 8")
    out = np.zeros(count, dtype=np.uint8)
    i = 0
    while i < count:
        repeated = reader.read(1)
        end = i + 1 + reader.read(fields[reader.read(2)])
        if end > count:
            raise RleError(f"brush RLE chunk ends at value {end}, past the {count} values of its header")
        if repeated:
            out[i:end] = reader.read(word)
        else:
            out[i:end] = [reader.read(word) for _ in range(end - i)]
        i = end
    return out


def rle_to_mask(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """The H x W bool mask of a brush RLE (its alpha channel nonzero), checked to be of that size."""
    values = rle_to_rgba(rle)
    if values.size != height * width * CHANNELS:
        raise RleError(f"brush RLE holds {values.size} values, not the {height} x {width} x {CHANNELS} "
                       "of the image: it belongs to an image of another size")
    return values.reshape(height, width, CHANNELS)[..., 3] != 0


class _BitReader:
    """Reads unsigned big-endian fields from an array of bits."""

    def __init__(self, bits: np.ndarray) -> None:
        self.bits = bits
        self.pos = 0

    def read(self, size: int) -> int:
        end = self.pos + size
        if end > self.bits.size:
            raise RleError("brush RLE is truncated (its bit stream ends inside a field)")
        value = 0
        for bit in self.bits[self.pos:end].tolist():
            value = (value << 1) | bit
        self.pos = end
        return value
