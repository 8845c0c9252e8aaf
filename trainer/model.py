"""The unified model: a Hugging Face causal LM that reads images through a projector and predicts them with a head.

    pixels → tower layer → token reduction → normalize → projector → spliced into the N `<image>` slots
    LM final hidden state at `<image_start>` + slots 0..N-2 → vision head → image tokens 0..N-1 (cosine loss)

Image ↔ slot bookkeeping needs no side tensors: every image is `<image_start>` + N × `<image>` + `<image_end>` in
`input_ids`, and images are stacked in row-major order of their `<image_start>` tokens (the collator's order).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmdata.core.errors import InputError, NotFound
from trainer.config import ModelConfig
from trainer.heads import build_head
from trainer.losses import chunked_cross_entropy, cosine_vision_loss
from trainer.packing import block_causal_mask
from trainer.projector import build_projector
from trainer.templates import IGNORE_INDEX
from trainer.tokens import IMAGE_END, IMAGE_START, IMAGE_TOKEN, MM_TOKENS
from trainer.vision import REDUCTIONS, ImageProcessor, VisionTower, image_tokens

MM_CONFIG = "mm_config.json"
MM_WEIGHTS = "mm_weights.safetensors"
FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class MMOutput:
    loss: torch.Tensor
    text_loss: torch.Tensor
    vision_loss: torch.Tensor | None  # None when the vision loss is off; 0 (with zero grads) when no target
    n_text_tokens: int
    n_vision_targets: int  # images whose tokens were regressed in this batch


@dataclass
class Loaded:
    model: UnifiedModel
    tokenizer: Any
    processor: ImageProcessor


class UnifiedModel(nn.Module):
    def __init__(self, llm: nn.Module, vision: VisionTower, projector: nn.Module, vision_head: nn.Module | None,
                 config: ModelConfig, *, tokenizer: Any, processor: ImageProcessor | None = None,
                 pad_token_id: int) -> None:
        super().__init__()
        self.llm, self.vision, self.projector, self.vision_head = llm, vision, projector, vision_head
        self.config = config
        self.tokenizer, self.processor = tokenizer, processor
        self.pad_token_id = pad_token_id
        self.num_image_tokens = config.num_image_tokens
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in MM_TOKENS}
        self.image_token_id, self.image_start_id, self.image_end_id = (ids[IMAGE_TOKEN], ids[IMAGE_START],
                                                                       ids[IMAGE_END])
        self.use_vision_loss = False  # set by trainer.trainable.apply_stage
        self._row_hooks: list[Any] = []
        self._reduce = REDUCTIONS[config.token_reduction]
        self._reduce(torch.zeros(1, vision.num_patches, vision.hidden_size), self.num_image_tokens)  # fail early

    # ------------------------------------------------------------------ parts
    @property
    def new_token_ids(self) -> list[int]:
        return [self.image_token_id, self.image_start_id, self.image_end_id]

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.llm.gradient_checkpointing_enable(**kwargs)

    def no_weight_decay(self) -> list[nn.Parameter]:
        """Matrices AdamW must not decay (`trainer.engine.param_groups`): the embedding matrices whose rows are
        gradient-masked (stage 1's `new_token_rows`), since decay would shrink the frozen rows (their gradient is
        zero, decay is not)."""
        if not self._row_hooks:
            return []
        mats = [self.llm.get_input_embeddings().weight]
        out = self.llm.get_output_embeddings()
        if out is not None:
            mats.append(out.weight)
        return mats

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) → (M, N, vision_dim) reduced (and normalised) features: projector input and head target."""
        train_tower = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(train_tower):
            x = self.vision(pixel_values)
        return image_tokens(x, self.config.token_reduction, self.num_image_tokens, self.config.normalize_vision)

    def embed(self, input_ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the projected image features written into the `<image>` slots, in order."""
        emb = self.llm.get_input_embeddings()(input_ids)
        slots = input_ids == self.image_token_id
        n_slots, n_feats = int(slots.sum()), 0 if features is None else features.shape[0] * features.shape[1]
        if n_slots != n_feats:
            raise ValueError(f"{n_slots} <image> slots in input_ids but {n_feats} image features "
                             f"({0 if features is None else features.shape[0]} images × {self.num_image_tokens}); "
                             "pixel_values must hold exactly the batch's images in placeholder order")
        if features is None:
            return emb
        proj = self.projector(features.to(self.projector_dtype)).to(emb.dtype)
        return emb.masked_scatter(slots.unsqueeze(-1), proj)

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                image_is_target: torch.Tensor | None = None, vision_loss: bool | None = None,
                position_ids: torch.Tensor | None = None, image_features: torch.Tensor | None = None,
                **_: Any) -> MMOutput:
        """Text CE (+ vision_coef × cosine vision loss when on). Extra batch keys (e.g. `skipped`) are ignored.

        `image_features` (cached, already reduced and normalised) replace `pixel_values`: the tower does not run.
        `position_ids` mark a packed batch (see `hidden_states`).
        """
        if labels is None:
            raise ValueError("forward needs labels; for inference call model.hidden_states(...)")
        if image_features is not None and pixel_values is not None:
            raise ValueError("pass pixel_values or cached image_features, not both")
        features = image_features if image_features is not None else (
            self.encode_images(pixel_values) if pixel_values is not None else None)
        hidden = self.hidden_states(input_ids, attention_mask, features, position_ids=position_ids)

        y = labels[:, 1:]
        sel = y != IGNORE_INDEX
        text_loss = chunked_cross_entropy(hidden[:, :-1][sel], y[sel], self.llm.get_output_embeddings(),
                                          self.config.ce_chunk_size)
        loss, v_loss, n_targets = text_loss, None, 0
        if self.use_vision_loss if vision_loss is None else vision_loss:
            v_loss, n_targets = self._vision_loss(input_ids, hidden, features, image_is_target)
            loss = loss + self.config.vision_coef * v_loss
        return MMOutput(loss, text_loss.detach(), None if v_loss is None else v_loss.detach(), int(sel.sum()),
                        n_targets)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      features: torch.Tensor | None = None, *,
                      position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final (normed) LM hidden states, (B, L, llm_dim).

        With `position_ids` (a packed batch: they restart at 0 for every sample) attention stays inside samples:
        flash-attention reads the sample boundaries from the position ids themselves (its varlen path); any other
        attention gets an explicit block-diagonal causal mask.
        """
        emb = self.embed(input_ids, features)
        if position_ids is not None:
            flash = "flash" in str(getattr(self.llm.config, "_attn_implementation", ""))
            attention_mask = None if flash else block_causal_mask(position_ids, emb.dtype)
        out = self.llm.get_decoder()(inputs_embeds=emb, attention_mask=attention_mask, position_ids=position_ids,
                                     use_cache=False)
        return out.last_hidden_state

    def _vision_loss(self, input_ids: torch.Tensor, hidden: torch.Tensor, features: torch.Tensor | None,
                     image_is_target: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        if self.vision_head is None:
            raise InputError("the vision loss is on but the model has no vision head (vision_head_type is null)")
        starts = (input_ids == self.image_start_id).nonzero()  # (M, 2) rows (b, p), row-major = image order
        m = 0 if features is None else features.shape[0]
        n_flags = 0 if image_is_target is None else image_is_target.numel()
        if not (starts.shape[0] == m == n_flags):
            raise ValueError(f"vision loss: {starts.shape[0]} <image_start> tokens, {m} images, {n_flags} "
                             "image_is_target flags; the three must match")
        if m == 0 or not bool(image_is_target.any()):
            # No target: a zero that still touches the head, so every rank all-reduces the same parameters.
            # Through the head's forward (not its parameters directly): under ZeRO-3 parameters are only
            # gathered inside a module's forward, and a gradient of the partitioned placeholder breaks reduction.
            zero = self.vision_head(hidden[:1, :1]).sum() * 0.0
            return zero.float(), 0
        tgt = starts[image_is_target.bool()]
        pos = tgt[:, 1:2] + torch.arange(self.num_image_tokens, device=input_ids.device)  # shifted by one
        if int(pos.max()) >= hidden.shape[1] - 1:
            raise ValueError("vision loss: an image run is cut at the end of the sequence")
        pred = self.vision_head(hidden[tgt[:, :1], pos])
        return cosine_vision_loss(pred, features[image_is_target.bool()]), tgt.shape[0]

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """LM + tokenizer (`llm/`), tower + preprocessor (`vision/`), `mm_config.json`, `mm_weights.safetensors`.

        `state_dict` (keys as in `self.state_dict()`) replaces the module's own tensors: under ZeRO-3 the
        parameters are partitioned and only a consolidated state dict holds the weights.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = self.state_dict() if state_dict is None else state_dict
        self.llm.save_pretrained(path / "llm", state_dict=None if state_dict is None else _prefixed(sd, "llm."))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path / "llm")
        self.vision.model.save_pretrained(path / "vision", state_dict=None if state_dict is None
                                          else _prefixed(sd, "vision.model."))
        if self.processor is not None:
            self.processor.save_pretrained(path / "vision")
        weights = {f"projector.{k}": v.contiguous() for k, v in _prefixed(sd, "projector.").items()}
        if self.vision_head is not None:
            weights |= {f"vision_head.{k}": v.contiguous() for k, v in _prefixed(sd, "vision_head.").items()}
        save_file(weights, str(path / MM_WEIGHTS))
        cfg = dataclasses.asdict(self.config) | {"llm": "llm", "vision_tower": "vision"}
        meta = {"format_version": FORMAT_VERSION, "model": cfg, "pad_token_id": self.pad_token_id,
                "token_ids": dict(zip(MM_TOKENS, self.new_token_ids))}
        (path / MM_CONFIG).write_text(json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> UnifiedModel:
        return load(path).model


# ---------------------------------------------------------------------- building


def build_model(config: ModelConfig | dict[str, Any]) -> Loaded:
    """Base LM dir + vision tower dir → a fresh unified model; adds the image tokens, mean-initialising their rows."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return _assemble(config, fresh=True, weights=None)


def load(source: str | Path | ModelConfig | dict[str, Any]) -> Loaded:
    """A directory written by `save_pretrained` → model + tokenizer + processor. A config builds a fresh model."""
    if isinstance(source, (ModelConfig, dict)):
        return build_model(source)
    path = Path(source)
    meta_file = path / MM_CONFIG
    if not meta_file.is_file():
        raise NotFound(f"{meta_file} not found: {path} is not a saved unified model; to start from a base "
                                "LM and vision tower use trainer.build_model(ModelConfig(llm=..., vision_tower=...))")
    meta = json.loads(meta_file.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{meta_file}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}")
    cfg = meta["model"] | {"llm": str(path / meta["model"]["llm"]),
                           "vision_tower": str(path / meta["model"]["vision_tower"])}
    loaded = _assemble(ModelConfig.from_dict(cfg), fresh=False, weights=path / MM_WEIGHTS)
    saved_ids = meta["token_ids"]
    for tok, tid in zip(MM_TOKENS, loaded.model.new_token_ids):
        if saved_ids[tok] != tid:
            raise InputError(f"{meta_file}: {tok} was id {saved_ids[tok]} at save time, the tokenizer now says {tid}")
    loaded.model.pad_token_id = meta["pad_token_id"]
    return loaded


def _assemble(config: ModelConfig, *, fresh: bool, weights: Path | None) -> Loaded:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for key in ("llm", "vision_tower"):
        if not Path(getattr(config, key), "config.json").is_file():
            raise NotFound(f"{key}: no config.json in {getattr(config, key)}; pass a local model directory")
    dtype = _DTYPES[config.dtype]
    tokenizer = AutoTokenizer.from_pretrained(config.llm)
    attn = {} if config.attn_implementation is None else {"attn_implementation": config.attn_implementation}
    llm = AutoModelForCausalLM.from_pretrained(config.llm, dtype=dtype, **attn)
    if fresh:
        add_image_tokens(tokenizer, llm)
    elif len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        raise InputError(f"{config.llm}: tokenizer has {len(tokenizer)} tokens but the LM only "
                         f"{llm.get_input_embeddings().num_embeddings} embedding rows")
    pad_id = resolve_pad_id(tokenizer)
    vision = VisionTower.from_pretrained(config.vision_tower, config.mm_vision_select_layer, dtype)
    vision.requires_grad_(False)  # frozen unless a stage asks for "vision"
    processor = ImageProcessor.from_pretrained(config.vision_tower, pad_to_square=config.image_aspect_ratio == "pad")
    llm_dim = llm.get_input_embeddings().embedding_dim
    projector = build_projector(config.mm_projector_type, vision.hidden_size, llm_dim).to(dtype)
    head = None if config.vision_head_type is None else build_head(config.vision_head_type, llm_dim,
                                                                   vision.hidden_size).to(dtype)
    model = UnifiedModel(llm, vision, projector, head, config, tokenizer=tokenizer, processor=processor,
                         pad_token_id=pad_id)
    if weights is not None:
        state = load_file(str(weights))
        model.projector.load_state_dict(_prefixed(state, "projector."))
        if head is not None:
            model.vision_head.load_state_dict(_prefixed(state, "vision_head."))
    return Loaded(model, tokenizer, processor)


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def add_image_tokens(tokenizer: Any, llm: nn.Module) -> list[int]:
    """Make the image tokens special tokens with embedding rows (input and output) set to the mean existing row."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in MM_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in MM_TOKENS]
    old_rows = llm.get_input_embeddings().num_embeddings
    if len(tokenizer) > old_rows:
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    keep = torch.ones(min(old_rows, len(tokenizer)), dtype=torch.bool)
    keep[[i for i in ids if i < len(keep)]] = False
    with torch.no_grad():
        mats = [llm.get_input_embeddings().weight]
        out = llm.get_output_embeddings()
        if out is not None and out.weight is not mats[0]:
            mats.append(out.weight)
        for w in mats:
            w[ids] = w[: len(keep)][keep].float().mean(0).to(w.dtype)
    return ids


def resolve_pad_id(tokenizer: Any) -> int:
    """An explicit pad id: the tokenizer's pad token, else its EOS (padding is masked, so any real id works)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise InputError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token explicitly")
        tokenizer.pad_token = tokenizer.eos_token
    return int(tokenizer.pad_token_id)
