"""The text track's core: language models, prompt sets and templates, and sampling (no Qt).

- :mod:`rlhf_core.text.model` finds the bundled SmolLM2-135M-Instruct GGUF file, converts it once
  to a plain safetensors folder in the per-user cache and loads any local causal-LM folder, with
  errors written for a person.
- :mod:`rlhf_core.text.prompts` holds the built-in prompt sets, file import (JSONL/CSV) and the
  prompt templates (zero-shot, few-shot, chain-of-thought, system prompt).
- :mod:`rlhf_core.text.generation` samples K completions per prompt in batches.

Model output is untrusted text: it is stored and shown as plain text, never interpreted.
"""
