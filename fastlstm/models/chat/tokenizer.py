"""Byte-level tokenizer: UTF-8 bytes (ids 0-255) plus pad, bos, eos, sep.

No vocabulary file, nothing to download, and no text is ever lost: ``str`` is
encoded with surrogates kept (so text that came from undecodable bytes goes
back to those bytes), ``bytes`` are taken as they are, and ``decode_bytes``
returns exactly the bytes that were encoded.
"""

from __future__ import annotations

import codecs
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

_ERRORS = "fastlstm.bytes"


def _encode_error(exc: UnicodeError):
    # Lone surrogates: U+DC80..U+DCFF stand for raw bytes (Python's surrogateescape);
    # any other lone surrogate is written the way surrogatepass does, so decode gives it back.
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for ch in exc.object[exc.start : exc.end]:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:
            out.append(cp - 0xDC00)
        else:
            out += ch.encode("utf-8", "surrogatepass")
    return bytes(out), exc.end


def _decode_error(exc: UnicodeError):
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    data = exc.object
    chunk = bytes(data[exc.start : exc.start + 3])
    # An encoded lone surrogate other than the byte-escape range: give the surrogate back.
    if len(chunk) == 3 and chunk[0] == 0xED and 0xA0 <= chunk[1] <= 0xBF and 0x80 <= chunk[2] <= 0xBF:
        ch = chunk.decode("utf-8", "surrogatepass")
        if not 0xDC80 <= ord(ch) <= 0xDCFF:
            return ch, exc.start + 3
    return chr(0xDC00 + data[exc.start]), exc.start + 1


codecs.register_error(_ERRORS, lambda exc: _encode_error(exc) if isinstance(exc, UnicodeEncodeError)
                      else _decode_error(exc))


class ByteTokenizer:
    """UTF-8 bytes plus four special tokens; ``vocab_size`` = 260.

    >>> tok = ByteTokenizer()
    >>> tok.decode(tok.encode("héllo", bos=True, eos=True))   # 'héllo'
    """

    PAD, BOS, EOS, SEP = 256, 257, 258, 259
    vocab_size = 260
    special_ids = (PAD, BOS, EOS, SEP)

    def to_bytes(self, text: str | bytes) -> bytes:
        if isinstance(text, (bytes, bytearray, memoryview)):
            return bytes(text)
        if not isinstance(text, str):
            raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
        return text.encode("utf-8", _ERRORS)

    def encode(self, text: str | bytes, *, bos: bool = False, eos: bool = False, max_length: int | None = None) -> list[int]:
        """Token ids of ``text``; ``max_length`` truncates the bytes (specials are kept)."""
        ids = list(self.to_bytes(text))
        if max_length is not None:
            if max_length < 0:
                raise ValueError(f"max_length must be >= 0, got {max_length}")
            ids = ids[:max_length]
        return ([self.BOS] if bos else []) + ids + ([self.EOS] if eos else [])

    def decode_bytes(self, ids: Sequence[int] | Tensor) -> bytes:
        """The bytes of ``ids``: specials dropped, decoding stops at the first eos."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        out = bytearray()
        for i in ids:
            i = int(i)
            if i == self.EOS:
                break
            if 0 <= i < 256:
                out.append(i)
            elif i not in self.special_ids:
                raise ValueError(f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})")
        return bytes(out)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Text of ``ids``; undecodable bytes become surrogates that encode back to them."""
        return self.decode_bytes(ids).decode("utf-8", _ERRORS)

    def count(self, text: str | bytes) -> int:
        """Tokens ``text`` takes in a context (its bytes plus one separator)."""
        return len(self.to_bytes(text)) + 1

    def batch(self, texts: Sequence[str | bytes], *, bos: bool = False, eos: bool = False,
              max_length: int | None = None) -> tuple[Tensor, Tensor]:
        """Padded batch: ids (B, T) int64 filled with ``PAD``, lengths (B,) int64 (each >= 1:
        an empty text becomes a single ``SEP``).

        >>> ids, lengths = ByteTokenizer().batch(["hi", "hello"])   # ids.shape == (2, 5)
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a sequence of str or bytes, not a single string")
        if max_length is not None and max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        # Bytes straight into one numpy buffer: no per-byte Python ints, one tensor at the end.
        data = [self.to_bytes(t)[:max_length] for t in texts]
        first = 1 if bos else 0
        sizes = np.fromiter((len(b) for b in data), dtype=np.int64, count=len(data)) + first + (1 if eos else 0)
        sizes = np.maximum(sizes, 1)  # an empty text becomes a single SEP
        ids = np.full((len(data), int(sizes.max()) if len(data) else 0), self.PAD, dtype=np.int64)
        if bos:
            ids[:, 0] = self.BOS
        for row, b in enumerate(data):
            n = len(b)
            if n:
                ids[row, first:first + n] = np.frombuffer(b, dtype=np.uint8)
            if eos:
                ids[row, first + n] = self.EOS
            elif n + first == 0:
                ids[row, 0] = self.SEP
        return torch.from_numpy(ids), torch.from_numpy(sizes)

    def pack(self, texts: Sequence[str | bytes], **kw) -> PackedSequence:
        """The batch as a PackedSequence of ids (any order; ``unsorted_indices`` restore it)."""
        ids, lengths = self.batch(texts, **kw)
        return pack_padded_sequence(ids, lengths, batch_first=True, enforce_sorted=False)
