"""Training: the one loop (``loop.py``), optimiser and schedules (``optim.py``), device and precision
(``device.py``), checkpoints (``checkpoint.py``), metrics (``metrics.py``), ``ownlm pretrain`` (``pretrain.py``)
and ``ownlm eval`` (``evaluate.py``).
"""
