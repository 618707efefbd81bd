"""Other people's formats, in one place: how ownlm's tensors and settings are named and laid out elsewhere.

``tensor_map`` has one table per architecture (GPT-2, Llama, Qwen2): each logical tensor with its ownlm name,
its Hugging Face name, its GGUF name and the transforms between them (a row block of a fused matrix, a
transpose, the RoPE row order llama.cpp's "llama" architecture expects). ``model_config`` turns a Hugging
Face ``config.json`` or GGUF metadata into a ``GPTConfig`` and back. Export (``ownlm.export``) and import
(``ownlm.importers``) both use these tables, so a layout is written down once and every round trip is tested.
"""
