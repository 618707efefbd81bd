"""ownlm: build your own GPT-style language model from raw text you own.

Stages (each a module, each runnable alone or chained by ``ownlm build``):
extract -> corpus -> tokenizer -> encode -> pretrain -> generate.
"""

__version__ = "0.1.0"
