"""Generation engines: `hf` (batched transformers generate) for open models, `openai` (chat completions)."""
