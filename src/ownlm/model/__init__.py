"""The GPT model (``gpt.py``), model folders on disk (``checkpoint.py``) and
GPT-2 weights import/export (``gpt2.py``). Import the submodules directly; nothing is loaded here."""
