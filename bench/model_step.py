"""Forward + backward step time: our unified model vs a bare AutoModelForCausalLM on the same expanded inputs.

Tiny random models (trainer.tiny), a batch of 8 mixed records (VQA, t2i, edit, visual CoT, video, text), stage-2
settings (LLM + projector + vision head train, vision tower frozen, vision loss on). The bare LM gets the very same
`input_ids` / `labels` (identical expanded length, `<image>` ids in the slots) in the same run. Not a test.

    .venv/bin/python bench/model_step.py [--steps 30] [--num-image-tokens 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from PIL import Image

from mmdata import Media, Record, RecordList, Turn
from trainer import STAGES, Collator, ConversationDataset, ModelConfig, apply_stage, build_model, make_tiny


def records() -> list[Record]:
    def rec(i: int, task: str, human: str, gpt: str) -> Record:
        n = human.count("<image>") + gpt.count("<image>")
        return Record(f"r{i}", "bench", task, [Turn("human", human), Turn("gpt", gpt)],
                      [Media(f"{i}/{j}.png") for j in range(n)]).validate()

    long = "Describe the picture in detail, what is on the left and the right and why. " * 3
    return [
        rec(0, "vqa", "<image>\nWhat is in the picture?", "A red cat on a blue car."),
        rec(1, "t2i", "Draw a red cat on a green tree.", "<image>"),
        rec(2, "edit", "<image>\nMake the sky blue.", "<image>"),
        rec(3, "visual_cot", "<image>\nHow many cars?", "Look at the region.<image>There are two cars."),
        rec(4, "video_qa", "<image><image><image><image>\nWhat happens?", "The dog runs to the man."),
        rec(5, "text", "What color is the sky?", "The sky is blue because of scattering."),
        rec(6, "vqa", "<image>\n" + long, "A man and a woman with a child, a house, a tree. " * 2),
        rec(7, "t2i", "Generate a photo of two dogs.", "<image>"),
    ]


def image(r: Record, j: int) -> Image.Image:
    return Image.new("RGB", (80, 64), (40 * j % 256, 90, 160))


def step(fn, params) -> float:
    for p in params:
        p.grad = None
    t = time.perf_counter()
    fn().backward()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--num-image-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: least sensitive to a busy machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        paths = make_tiny(d)
        ours = build_model(ModelConfig(llm=str(paths.lm), vision_tower=str(paths.vision),
                                       num_image_tokens=args.num_image_tokens)).model
        bare = transformers.AutoModelForCausalLM.from_pretrained(paths.lm)
        bare.resize_token_embeddings(ours.llm.get_input_embeddings().num_embeddings, mean_resizing=False)
    apply_stage(ours, STAGES["stage2"])
    ours.train()
    bare.train()
    ds = ConversationDataset.for_model(RecordList(records(), image), ours, max_length=4096)
    batch = Collator(ours.pad_token_id)([ds[i] for i in range(len(ds))])
    lm_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    ours_params = [p for p in ours.parameters() if p.requires_grad]
    bare_params = list(bare.parameters())

    def run_ours() -> torch.Tensor:
        return ours(**batch).loss

    def run_bare() -> torch.Tensor:
        return bare(**lm_inputs).loss

    for _ in range(3):
        step(run_ours, ours_params), step(run_bare, bare_params)
    t_ours, t_bare = [], []
    for _ in range(args.steps):  # interleaved, so machine noise hits both alike
        t_ours.append(step(run_ours, ours_params))
        t_bare.append(step(run_bare, bare_params))
    mo, mb = statistics.median(t_ours), statistics.median(t_bare)
    # Adjacent steps share the machine's load, so the median of per-pair ratios is the robust figure.
    pair = statistics.median(o / b for o, b in zip(t_ours, t_bare))
    b, L = batch["input_ids"].shape
    print(f"batch: {b} records, padded length {L}, {batch['pixel_values'].shape[0]} images "
          f"({int(batch['image_is_target'].sum())} targets), N={args.num_image_tokens}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'model':<34}{'median ms':>10}{'min ms':>10}")
    print(f"{'bare AutoModelForCausalLM':<34}{mb * 1e3:>10.2f}{min(t_bare) * 1e3:>10.2f}")
    print(f"{'unified (tower+proj+LM+head)':<34}{mo * 1e3:>10.2f}{min(t_ours) * 1e3:>10.2f}")
    print(f"ratio unified / bare: {pair:.3f}x median of per-step pairs, {min(t_ours) / min(t_bare):.3f}x of minima "
          "(target <= 1.15x)")


if __name__ == "__main__":
    main()
