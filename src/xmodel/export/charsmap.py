"""SentencePiece "precompiled charsmaps": a text normalizer (NFKC, lowercase, …) in the form llama.cpp reads.

llama.cpp's Unigram tokenizer (GGUF ``tokenizer.ggml.model = "t5"``) normalises text only through
``tokenizer.ggml.precompiled_charsmap``, the blob SentencePiece stores in its models. The blob is

    uint32 little-endian  size in bytes of the double array
    uint32[]              a darts-clone double array (a trie over UTF-8 byte strings)
    bytes                 NUL-terminated replacement strings; a trie value is an offset into them

and normalisation replaces, at each position, the longest key that is a prefix of the remaining input by its
replacement (or copies one character when no key matches). Hugging Face `tokenizers` reads the same blob
(`normalizers.Precompiled`), which the tests use to check what is built here.

A tokenizer.json normalizer (NFKC, NFC, Lowercase, …, or a Sequence of them) becomes such a map by applying it
to every code point, and to the canonical decomposition of every precomposed character (so that composing
normalisers also compose "e + ◌́" into "é"). That is exact for the per-character part of those normalisers,
which is what real text exercises; re-ordering of several stacked combining marks is not reproduced.

Unit layout (darts-clone; the same bits llama.cpp's `xcda_array_view` decodes):
bits 0–7 label, bit 8 "has a value child", bit 9 offset is stored ≫ 8, bits 10–30 offset, bit 31 value unit.
The children of the node at position p with offset o sit at p ^ o ^ label; its value sits at p ^ o.
"""

from __future__ import annotations

import struct
import sys
import unicodedata
from collections.abc import Callable

import numpy as np

VALUE_FLAG = 1 << 31
HAS_LEAF = 1 << 8


class _Node:
    __slots__ = ("children", "value")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.value: int | None = None


def _encode_offset(offset: int) -> int:
    if offset < 1 << 21:
        return offset << 10
    if offset % 256 == 0 and offset < 1 << 29:
        return (offset << 2) | (1 << 9)
    raise ValueError(f"double-array offset {offset} cannot be encoded")


def build_double_array(keys_to_values: dict[bytes, int]) -> np.ndarray:
    """The darts-clone double array of a trie mapping non-empty byte strings (no NUL byte) to values < 2^31."""
    root = _Node()
    for key, value in keys_to_values.items():
        if not key or b"\0" in key:
            raise ValueError(f"charsmap key {key!r}: empty or contains NUL")
        node = root
        for byte in key:
            node = node.children.setdefault(byte, _Node())
        node.value = value

    units = np.zeros(1 << 12, dtype=np.uint32)
    used = np.zeros(1 << 12, dtype=bool)
    # A unit is only checked for its label, so no two nodes may share a base: a lookup of a label the node
    # lacks would otherwise land on another node's child carrying that label (darts-clone's "used offsets").
    base_taken = np.zeros(1 << 12, dtype=bool)
    used[0] = True  # the root
    first_free = 1
    window = 1024

    def grow(size: int) -> None:
        nonlocal units, used, base_taken
        if size > len(used):
            new = max(size, 2 * len(used))
            units = np.concatenate([units, np.zeros(new - len(units), np.uint32)])
            used = np.concatenate([used, np.zeros(new - len(used), bool)])
            base_taken = np.concatenate([base_taken, np.zeros(new - len(base_taken), bool)])

    stack = [(root, 0)]
    while stack:
        node, pos = stack.pop()
        labels = sorted(node.children)
        slots = labels + ([0] if node.value is not None else [])
        if not slots:
            continue
        while used[first_free]:
            first_free += 1
            grow(first_free + 1)
        # A free position for slots[0] fixes base = position ^ slots[0]; take the first untaken base whose every
        # slot is free (position 0 is the root's, so no slot lands there). Candidates are tested a window at a time.
        start = first_free
        while True:
            grow(((start + window) | 255) + 1)
            positions = np.arange(start, start + window)
            bases = positions[~used[positions]] ^ slots[0]
            ok = ~base_taken[bases]
            for c in slots[1:]:
                ok &= ~used[bases ^ c]
            if ok.any():
                base = int(bases[ok.argmax()])
                break
            start += window
        base_taken[base] = True
        units[pos] |= _encode_offset(pos ^ base) | (HAS_LEAF if node.value is not None else 0)
        for c in slots:
            used[base ^ c] = True
        if node.value is not None:
            units[base] = VALUE_FLAG | node.value
        for c in labels:
            units[base ^ c] = c
            stack.append((node.children[c], base ^ c))
    # darts-clone arrays come in blocks of 256 units.
    size = (int(np.flatnonzero(used).max()) + 256) // 256 * 256
    return units[:size]


def build_charsmap(mapping: dict[str, str]) -> bytes:
    """The precompiled-charsmap blob replacing each key of `mapping` (a string) by its value."""
    replacements = bytearray()
    offsets: dict[bytes, int] = {}
    trie: dict[bytes, int] = {}
    for key in sorted(mapping):
        rep = mapping[key].encode("utf-8")
        if b"\0" in rep:
            raise ValueError(f"charsmap replacement for {key!r} contains NUL")
        if rep not in offsets:
            offsets[rep] = len(replacements)
            replacements += rep + b"\0"
        trie[key.encode("utf-8")] = offsets[rep]
    blob = build_double_array(trie).astype("<u4").tobytes()
    return struct.pack("<I", len(blob)) + blob + bytes(replacements)


def normalizer_mapping(normalize: Callable[[str], str]) -> dict[str, str]:
    """Every code point (and canonical decomposition) that `normalize` changes → what it becomes."""
    mapping = {}
    for cp in range(1, sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:  # surrogates are not characters
            continue
        ch = chr(cp)
        out = normalize(ch)
        if out != ch:
            mapping[ch] = out
        decomposed = unicodedata.normalize("NFD", ch)
        if len(decomposed) > 1:
            out = normalize(decomposed)
            if out != decomposed:
                mapping[decomposed] = out
    return mapping
