"""Inference on top of the model: the one KV cache with per-row slots that ``GPT.forward`` consumes
(``kv_cache.py``). ``generate``, ``chat`` and ``serve`` all decode through it. Import the submodules directly;
nothing is loaded here."""
