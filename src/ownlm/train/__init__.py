"""Training: the one Trainer and its task protocol (``trainer.py``), optimiser and schedules (``optim.py``),
device and precision (``device.py``), what a training checkpoint adds to a model folder (``checkpoint.py``; the
run folder itself is ``ownlm.model.run``), metrics (``metrics.py``), the ``train`` and ``model`` config sections
(``config.py``), ``ownlm pretrain`` (``pretrain.py``) and ``ownlm eval`` (``evaluate.py``).
"""
