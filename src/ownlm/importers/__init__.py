"""Real models into ownlm: a GGUF file (``gguf.py``) or a Hugging Face folder or hub id (``hf.py``).

    ownlm import gguf SmolLM2-135M-Instruct.Q4_1.gguf --out models/smol
    ownlm import hf HuggingFaceTB/SmolLM2-135M-Instruct --out models/smol     # online: downloads the folder
    ownlm import gpt2 gpt2 --out models/gpt2                                 # the short form for GPT-2

Each writes an ordinary ownlm model folder (``model.safetensors`` + ``config.json`` + ``tokenizer.json`` and,
when the model has one, its chat template): every other command (chat, serve, generate, finetune, export)
reads it like a model ownlm trained. Names and layouts come from ``ownlm.formats``, the tables export uses.
"""
