"""The multimodal token strings, shared by templates, data and model (one place, so they cannot drift)."""

from __future__ import annotations

IMAGE_TOKEN = "<image>"  # fills each of the N image slots in input_ids; its embedding is always replaced
IMAGE_START = "<image_start>"
IMAGE_END = "<image_end>"
MM_TOKENS = (IMAGE_TOKEN, IMAGE_START, IMAGE_END)
