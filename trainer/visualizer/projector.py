"""Condition projectors: N reduced tower tokens (vision_dim) → the UNet's cross-attention context (T × context_dim).

MetaMorph's three modes (its visualizer README: 2-3 layers, hidden 2048-4096 work best):
- `mlp`: per token, Linear → LayerNorm → ReLU for each hidden layer, then Linear → LayerNorm; the N tokens are
  padded with zero rows up to T (Stable Diffusion's text context is 77 long).
- `xattn`: T learned queries; each layer cross-attends to the projected tokens (post-norm residual).
- `transformer`: an encoder-decoder transformer (pre-norm, no dropout) with T learned queries as decoder input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPProjector(nn.Module):
    def __init__(self, vision_dim: int, context_dim: int, *, hidden_dim: int, num_layers: int,
                 context_tokens: int) -> None:
        super().__init__()
        dims = [vision_dim] + [hidden_dim] * (num_layers - 1) + [context_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in dims[1:])
        self.context_tokens = context_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms)):
            x = norm(layer(x))
            if i < len(self.layers) - 1:
                x = F.relu(x)
        pad = self.context_tokens - x.shape[1]
        return F.pad(x, (0, 0, 0, pad)) if pad > 0 else x


class _CrossBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return self.norm(q + self.attn(q, kv, kv, need_weights=False)[0])


class XAttnProjector(nn.Module):
    def __init__(self, vision_dim: int, context_dim: int, *, num_layers: int, num_heads: int,
                 context_tokens: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, context_tokens, context_dim))
        self.proj = nn.Linear(vision_dim, context_dim)
        self.norm = nn.LayerNorm(context_dim)
        self.blocks = nn.ModuleList(_CrossBlock(context_dim, num_heads) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.norm(self.proj(x))
        q = self.queries.expand(x.shape[0], -1, -1).to(kv.dtype)
        for block in self.blocks:
            q = block(q, kv)
        return q


class TransformerProjector(nn.Module):
    def __init__(self, vision_dim: int, context_dim: int, *, hidden_dim: int, num_layers: int, num_heads: int,
                 context_tokens: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(vision_dim, hidden_dim)
        layer = dict(d_model=hidden_dim, nhead=num_heads, dim_feedforward=4 * hidden_dim, dropout=0.0,
                     batch_first=True, norm_first=True)
        # Built from its parts only to turn off nested tensors, which pre-norm layers cannot use anyway.
        encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), num_layers, nn.LayerNorm(hidden_dim),
                                        enable_nested_tensor=False)
        self.transformer = nn.Transformer(d_model=hidden_dim, nhead=num_heads, num_encoder_layers=num_layers,
                                          num_decoder_layers=num_layers, dim_feedforward=4 * hidden_dim,
                                          dropout=0.0, batch_first=True, norm_first=True, custom_encoder=encoder)
        self.queries = nn.Parameter(torch.randn(1, context_tokens, hidden_dim))
        self.proj_out = nn.Linear(hidden_dim, context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(x)
        q = self.queries.expand(x.shape[0], -1, -1).to(h.dtype)
        return self.proj_out(self.transformer(h, q))


def build_condition_projector(kind: str, vision_dim: int, context_dim: int, *, hidden_dim: int, num_layers: int,
                              num_heads: int, context_tokens: int) -> nn.Module:
    if kind == "mlp":
        return MLPProjector(vision_dim, context_dim, hidden_dim=hidden_dim, num_layers=num_layers,
                            context_tokens=context_tokens)
    if kind == "xattn":
        return XAttnProjector(vision_dim, context_dim, num_layers=num_layers, num_heads=num_heads,
                              context_tokens=context_tokens)
    if kind == "transformer":
        return TransformerProjector(vision_dim, context_dim, hidden_dim=hidden_dim, num_layers=num_layers,
                                    num_heads=num_heads, context_tokens=context_tokens)
    raise ValueError(f"projector type {kind!r} is unknown; expected mlp, xattn or transformer")
