"""Byte-level BPE tokenizer: train, encode, decode, save, load (see ``bpe.py``).

>>> from ownlm.tokenizer import Tokenizer
>>> tok = Tokenizer.train(["hello hello world"], vocab_size=260, progress=False)
>>> tok.decode(tok.encode("hello world"))
'hello world'
"""

from ownlm.tokenizer.bpe import PATTERNS, Tokenizer, resolve_pattern

__all__ = ["PATTERNS", "Tokenizer", "resolve_pattern"]
