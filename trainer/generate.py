"""Greedy generation with an exported model: text, and MetaMorph-style image embeddings.

When the model emits `<image_start>`, the next N positions are image tokens: the vision head's prediction at each
position (normalised like the training targets) is projected back in as the next input, and `<image_end>` closes
the run. The N × vision_dim embeddings are returned; `trainer.visualizer.render` turns them into pixels.
No KV cache: this is a check that an export runs, not a serving path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from mmdata.core.errors import InputError
from mmdata.core.schema import IMAGE
from trainer.model import UnifiedModel, load
from trainer.templates import ConversationEncoder


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    images: list[torch.Tensor] = field(default_factory=list)  # each (N, vision_dim): predicted vision embeddings


@torch.no_grad()
def generate(model: UnifiedModel | str | Path, prompt: str, images: list[Image.Image] | None = None, *,
             max_new_tokens: int = 32, system: str | None = None, start_image: bool = False) -> Generation:
    """Greedy continuation of one user turn (`<image>` placeholders in `prompt` take `images` in order).

    `start_image` begins the answer with `<image_start>`: the model's first output is an image (text-to-image and
    edit prompts), whatever a barely trained LM would have chosen.
    """
    if not isinstance(model, UnifiedModel):
        model = load(model).model
    model.eval()
    images = images or []
    if prompt.count(IMAGE) != len(images):
        raise InputError(f"prompt has {prompt.count(IMAGE)} {IMAGE} placeholders but {len(images)} images "
                         "were given")
    turns = ([("system", system)] if system else []) + [("human", prompt)]
    enc = ConversationEncoder(model.config.template, model.tokenizer, model.num_image_tokens)
    ids = model.tokenizer(enc.prompt(turns), add_special_tokens=False, return_tensors="pt").input_ids
    feats = torch.stack([model.processor(im) for im in images]) if images else None
    emb = model.embed(ids, model.encode_images(feats) if feats is not None else None)

    stop = enc.stop_ids
    lm_head = model.llm.get_output_embeddings()
    out_ids: list[int] = []
    predicted: list[torch.Tensor] = []
    if start_image and model.vision_head is None:
        raise InputError("start_image: this model has no vision head (a stage-1 export?); use a stage-2 export")
    for i in range(max_new_tokens):
        if start_image and i == 0:
            tok = model.image_start_id
        else:
            h = model.llm.get_decoder()(inputs_embeds=emb, use_cache=False).last_hidden_state[:, -1]
            tok = int(lm_head(h).argmax(-1))
        out_ids.append(tok)
        emb = torch.cat([emb, model.llm.get_input_embeddings()(torch.tensor([[tok]]))], 1)
        if tok in stop:
            break
        if tok == model.image_start_id and model.vision_head is not None:
            emb, image = _image_run(model, emb)
            predicted.append(image)
            out_ids += [model.image_token_id] * model.num_image_tokens + [model.image_end_id]
    text = model.tokenizer.decode(out_ids, skip_special_tokens=False)
    return Generation(text, out_ids, predicted)


def _image_run(model: UnifiedModel, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    preds = []
    for _ in range(model.num_image_tokens):
        h = model.llm.get_decoder()(inputs_embeds=emb, use_cache=False).last_hidden_state[:, -1:]
        pred = model.vision_head(h)
        if model.config.normalize_vision:
            pred = F.normalize(pred.float(), dim=-1).to(pred.dtype)
        preds.append(pred[0, 0])
        emb = torch.cat([emb, model.projector(pred.to(model.projector_dtype)).to(emb.dtype)], 1)
    end = model.llm.get_input_embeddings()(torch.tensor([[model.image_end_id]]))
    return torch.cat([emb, end], 1), torch.stack(preds)
