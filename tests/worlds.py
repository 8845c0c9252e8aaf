"""A training world for tests and `bench/train_step.py`: a tiny model and a small mixture to train it on. It needs the
trainer and a builder, so it lives with the tests, not in the library's sample-data generators (`mmdata.testing`)."""

from __future__ import annotations

import json
from pathlib import Path

from mmdata.core.schema import IMAGE
from mmdata.storage.location import Location, join


def make_train_world(root: Path, size: int, data: Location | None = None, copy_media: bool = False,
                     models: bool = True) -> tuple[Path, Location]:
    """A tiny model and a `size`-sample mixture to train it on, under `root`: (models dir, mixture dir).
    `data` puts the datasets and the mixture elsewhere (a URL too); `models=False` skips the model.

    The mixture is 2:1 VQA records (the generated LLaVA world) and text → image records, so stage 2's vision loss
    has generation targets to regress. Needs the `train` extra (the model comes from `trainer.tiny`).
    """
    from builders.cambrian import CambrianOptions
    from mmdata.build.driver import BuildSettings, build
    from mmdata.mix.planner import mix
    from mmdata.testing.llava import make_world
    from trainer.tiny import make_tiny

    w = make_world(root / "src")
    gen = root / "src" / "t2i.jsonl"
    gen.write_text("".join(json.dumps({"id": f"g{i}", "image": f"coco/{i:06d}.jpg", "conversations": [
        {"from": "human", "value": "Draw the picture."}, {"from": "gpt", "value": IMAGE}]}) + "\n"
        for i in range(8)))
    out = root if data is None else data
    for name, src in (("vqa", w.jsonl), ("t2i", gen)):
        build("cambrian", CambrianOptions(input=[src], media_root=w.media_root),
              BuildSettings(out=join(out, name), copy_media=copy_media))
    vqa, t2i = ("vqa", "t2i") if data is None else (json.dumps(str(join(data, n))) for n in ("vqa", "t2i"))
    (root / "mix.yaml").write_text(f"seed: 0\nsize: {size}\nsources:\n  - {{path: {vqa}, weight: 2}}\n"
                                   f"  - {{path: {t2i}, weight: 1}}\n")
    mix(root / "mix.yaml", join(out, "mixture"))
    if models:
        make_tiny(root / "models")
    return root / "models", join(out, "mixture")
