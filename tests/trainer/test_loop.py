"""The loop's pieces that need no run: one `param_groups` for every trainer, skip kinds."""

from __future__ import annotations

from torch import nn

from trainer import STAGES, apply_stage
from trainer.engine import param_groups
from trainer.loop import skip_kind


def _ids(group: dict) -> set[int]:
    return {id(p) for p in group["params"]}


def test_param_groups_decay_matrices_only_and_skip_frozen_parameters() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    net[2].requires_grad_(False)
    decay, rest = param_groups(net, 0.01)
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert _ids(decay) == {id(net[0].weight)}
    assert _ids(rest) == {id(net[0].bias), id(net[1].weight), id(net[1].bias)}
    net[0].requires_grad_(False)
    assert [_ids(g) for g in param_groups(net, 0.01)] == [{id(net[1].weight), id(net[1].bias)}]  # no empty group


def test_param_groups_exempt_the_row_masked_embeddings_of_stage1(built) -> None:
    model = built.model
    emb, head = model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight
    apply_stage(model, STAGES["stage1"])  # new_token_rows without llm: a gradient mask on both matrices
    decay, rest = param_groups(model, 0.1)
    assert {id(emb), id(head)} <= _ids(rest) and not {id(emb), id(head)} & _ids(decay)
    assert id(model.projector[0].weight) in _ids(decay)
    apply_stage(model, STAGES["stage2"])  # the whole LLM trains: no mask, its matrices decay
    decay, _ = param_groups(model, 0.1)
    assert id(head) in _ids(decay) and model.no_weight_decay() == []
    assert all(p.requires_grad for g in param_groups(model, 0.1) for p in g["params"])


def test_skip_kinds_name_the_kind_not_the_file() -> None:
    assert skip_kind("labels: no supervised token") == "labels"
    assert skip_kind("image 0 (a/b.jpg): OSError: cannot identify image file") == "image: OSError"
    assert skip_kind("media[1] (img/3.png): UnidentifiedImageError: x") == "media: UnidentifiedImageError"
    assert skip_kind("features: KeyError: 'r1'") == "features: KeyError"
