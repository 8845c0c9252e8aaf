"""Helpers for trainer tests: generated images, records for every task, config shortcuts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mmdata.core.schema import Media, Record, Turn
from trainer import ModelConfig
from trainer.tiny import TinyPaths

N = 4  # image tokens per image in tests: short golden strings, and a 2 × 2 grid from the 4 × 4 patches


def model_config(paths: TinyPaths, **kw) -> ModelConfig:
    return ModelConfig(llm=str(paths.lm), vision_tower=str(paths.vision), num_image_tokens=kw.pop("n", N), **kw)


def fake_image(record: Record, j: int) -> Image.Image:
    """Deterministic, non-square, different per record and index: order mistakes change the pixels."""
    seed = sum(map(ord, record.id)) * 7 + j * 31
    return Image.new("RGB", (48 + j * 8, 40), ((seed * 3) % 256, (seed * 5) % 256, (seed * 11) % 256))


def rec(id: str, task: str, *turns: tuple[str, str], kind: str = "image") -> Record:
    n = sum(t[1].count("<image>") for t in turns)
    media = [Media(path=f"{id}/{j}.png", kind=kind, video="v.mp4" if kind == "frame" else None,
                   t=float(j) if kind == "frame" else None) for j in range(n)]
    return Record(id, "test", task, [Turn(r, v) for r, v in turns], media).validate()


RECORDS: dict[str, Record] = {
    "vqa": rec("vqa1", "vqa", ("human", "<image>\nWhat is in the picture?"), ("gpt", "A red cat.")),
    "t2i": rec("t2i1", "t2i", ("human", "Draw a red cat."), ("gpt", "<image>")),
    "edit": rec("edit1", "edit", ("human", "<image>\nMake it blue."), ("gpt", "<image>")),
    "visual_cot": rec("cot1", "visual_cot", ("human", "<image>\nHow many cars?"),
                      ("gpt", "Look at the region.<image>There are two.")),
    "video": rec("vid1", "video_qa", ("human", "<image><image><image>\nWhat happens?"), ("gpt", "The dog runs."),
                 kind="frame"),
    "text": rec("txt1", "text", ("system", "Be brief."), ("human", "Hi there"), ("gpt", "Hello.")),
    "multi": rec("multi1", "vqa", ("human", "<image>\nWhat color?"), ("gpt", "Red."), ("human", "And the sky?"),
                 ("gpt", "Blue.")),
}



def make_plain_tokenizer():
    """A fast tokenizer with the llama3 specials but no image tokens (like a stock Llama-3 tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_tokens(list("abcdefghijklmnopqrstuvwxyz<>_"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_tokens(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                    special_tokens=True)
    return fast


def launcher_env() -> dict[str, str]:
    """The environment for a `torchrun` child: one thread per rank, no JIT-compiled comm op, no inherited rank."""
    import os

    env = os.environ | {"OMP_NUM_THREADS": "1", "MMTRAIN_SHM_COMM": "0"}
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@dataclass
class TrainWorld:
    root: Path
    models: Path
    mixture: Path

    def overrides(self, stage: str, out: Path, **extra: object) -> dict[str, object]:
        base: dict[str, object] = {"data.mixture": str(self.mixture), "output_dir": str(out),
                                   "logging.progress": False, "logging.tensorboard": False,
                                   "train.max_steps": 4, "checkpoint.every": 2, "checkpoint.keep": 2}
        if stage == "stage1":
            base |= {"model.llm": str(self.models / "lm"), "model.vision_tower": str(self.models / "vision")}
        return base | extra
