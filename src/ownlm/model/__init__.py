"""The model layer: the GPT (``gpt.py``), LoRA adapters as modules (``lora.py``), the checkpoint kinds registry
(``kinds.py``), model folders on disk (``checkpoint.py``) and run folders of step folders (``run.py``). It imports
nothing above it (no task, no trainer, no runtime). Import the submodules directly; nothing is loaded here."""
