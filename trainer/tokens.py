"""The multimodal token strings, shared by templates, data and model (one place, so they cannot drift)."""

from __future__ import annotations

from mmdata.core.schema import IMAGE

# Fills each of the N image slots in input_ids (its embedding is always replaced); spelled like the data's
# placeholder, which the chat template expands into `IMAGE_START + N x IMAGE_TOKEN + IMAGE_END`.
IMAGE_TOKEN = IMAGE
IMAGE_START = "<image_start>"
IMAGE_END = "<image_end>"
MM_TOKENS = (IMAGE_TOKEN, IMAGE_START, IMAGE_END)
