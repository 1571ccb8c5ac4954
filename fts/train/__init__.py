"""Fine-tuning backends: `hf` (TRL SFTTrainer + PEFT) for open models, `openai` (the fine-tuning API)."""
