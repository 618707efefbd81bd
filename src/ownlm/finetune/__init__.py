"""Fine-tuning: instruction/chat SFT, LoRA adapters, partial fine-tuning."""
