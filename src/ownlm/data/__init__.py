"""Token data: shards on disk (``shards.py``), encoding a corpus into them (``encode.py``) and training
batches drawn from them (``batches.py``).

>>> from ownlm.data.shards import open_split
>>> train = open_split("tokens", "train")  # doctest: +SKIP
"""
