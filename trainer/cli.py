"""The `mmtrain` command line: `mmtrain stage1|stage2|visualizer --config RECIPE.yaml [--section.key VALUE ...]`,
and `mmtrain generate`.

Each training command parses, loads the recipe (overrides applied before validation) and calls its train function.
Under torchrun / the deepspeed launcher every rank runs the same command.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import typer

from mmdata.core.commands import user_errors
from mmdata.core.flags import recipe_command
from mmdata.core.options import find_key, overview, parse_overrides
from trainer.recipe import OptimSection, TrainRecipe
from trainer.visualizer.config import VisualizerRecipe

app = typer.Typer(name="mmtrain", help="Train the unified model: stage 1 (projector), then stage 2 (LLM + head), "
                  "then the visualizer (pictures from predicted image tokens); generate with the exports.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
_CONFIG = typer.Option(..., "--config", "-c", help="Training recipe YAML (recipes/tiny/, recipes/metamorph/)")
_RESUME = typer.Option(False, "--resume", help="Continue from the newest checkpoint in output_dir (must exist)")
_SCALE = typer.Option(None, "--lr-scale-from", metavar="BASE_LR@BASE_BATCH",
                      help=f"--optim.lr_scale_from: {find_key(OptimSection, 'lr_scale_from').help}")


def _overrides(ctx: typer.Context, resume: bool, lr_scale_from: str | None) -> dict[str, object]:
    overrides = parse_overrides(list(ctx.args))
    if resume:
        overrides["checkpoint.resume"] = True
    if lr_scale_from is not None:
        overrides["optim.lr_scale_from"] = lr_scale_from
    return overrides


def _run(stage: str, ctx: typer.Context, config: Path, resume: bool, lr_scale_from: str | None) -> None:
    from trainer.recipe import ConfigError, load_recipe

    recipe = load_recipe(config, _overrides(ctx, resume, lr_scale_from))
    if recipe.stage != stage:
        raise ConfigError(f"{config}: stage is {recipe.stage!r} but you ran `mmtrain {stage}`; run "
                          f"`mmtrain {recipe.stage}` or fix `stage:` in the recipe")
    from trainer.train import train

    train(recipe)


@app.command(**recipe_command(TrainRecipe, "Training recipe keys"))
@user_errors
def stage1(ctx: typer.Context, config: Path = _CONFIG, resume: bool = _RESUME, lr_scale_from: str | None = _SCALE) -> None:
    """Stage 1: projector (+ the new image-token rows) on a frozen LLM and vision tower; text loss only."""
    _run("stage1", ctx, config, resume, lr_scale_from)


@app.command(**recipe_command(TrainRecipe, "Training recipe keys"))
@user_errors
def stage2(ctx: typer.Context, config: Path = _CONFIG, resume: bool = _RESUME, lr_scale_from: str | None = _SCALE) -> None:
    """Stage 2: from stage 1's export, LLM + projector + vision head train; vision loss on."""
    _run("stage2", ctx, config, resume, lr_scale_from)


@app.command()
def keys(visualizer: bool = typer.Option(False, "--visualizer", help="The visualizer recipe's keys instead")) -> None:
    """Every training-recipe key (`section.key`), its type and its doc: what the YAML and the overrides accept."""
    for key, kind, text in overview(VisualizerRecipe if visualizer else TrainRecipe):
        typer.echo(f"{key:32} {kind:36} {text}".rstrip())


@app.command(**recipe_command(VisualizerRecipe, "Visualizer recipe keys"))
@user_errors
def visualizer(ctx: typer.Context, config: Path = _CONFIG, resume: bool = _RESUME,
               lr_scale_from: str | None = _SCALE) -> None:
    """The visualizer: a diffusion UNet conditioned on stage 2's image tokens (projector + UNet train, VAE frozen)."""
    from trainer.visualizer.config import load_visualizer_recipe

    recipe = load_visualizer_recipe(config, _overrides(ctx, resume, lr_scale_from))
    from trainer.visualizer.train import train_visualizer

    train_visualizer(recipe)


@app.command()
@user_errors
def generate(
    model: Path = typer.Option(..., "--model", help="Exported stage-2 model (RUN/export or the run directory)"),
    prompt: str = typer.Option(..., "--prompt", help="The user turn; `<image>` marks where --image goes"),
    visualizer: Path | None = typer.Option(None, "--visualizer", help="Exported visualizer: render images to PNG"),
    image: Path | None = typer.Option(None, "--image", help="An input image (edit prompts)"),
    out: Path = typer.Option(Path("out.png"), "--out", help="PNG for the first image; later ones get -1, -2, …"),
    cfg: float = typer.Option(3.0, "--cfg", help="Classifier-free guidance scale (1 = none)"),
    steps: int = typer.Option(25, "--steps", help="DPM-Solver++ steps"),
    seed: int = typer.Option(0, "--seed", help="Same seed, same pictures"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    start_image: bool = typer.Option(False, "--start-image", help="Begin the answer with an image"),
) -> None:
    """Generate with an exported model: print the text; with --visualizer, write each predicted image as a PNG."""
    from trainer.visualizer.render import generate_pictures

    r = generate_pictures(model, prompt, out=out, visualizer=visualizer, image=image, cfg=cfg, steps=steps,
                          seed=seed, max_new_tokens=max_new_tokens, start_image=start_image)
    print(r.text)
    for path in r.images:
        print(f"[mmtrain] image → {path}")
    if r.predicted and not r.images:
        print(f"[mmtrain] {r.predicted} image(s) predicted; pass --visualizer VIS/export to render them")


@app.command("cache-features", **recipe_command(TrainRecipe, "Training recipe keys"))
@user_errors
def cache_features(ctx: typer.Context, config: Path = _CONFIG,
                   out: Path = typer.Option(..., "--out", "-o", help="Cache directory (resumed if it exists)"),
                   dtype: str | None = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16 (default: "
                                                    "the model's dtype)"),
                   batch_size: int = typer.Option(16, "--batch-size", help="Images per tower forward")) -> None:
    """Encode every image of the recipe's mixture once with its frozen tower; train with --data.vision_features."""
    from trainer.features import cache_features as build
    from trainer.recipe import load_recipe

    s = build(load_recipe(config, _overrides(ctx, False, None)), out, dtype=dtype, batch_size=batch_size)
    c = s["counts"]
    print(f"[mmtrain] cache-features: {c['images']} images of {c['records']} records in {len(s['shards'])} shards "
          f"({s['dtype']}) in {out}; {c['failed_records']} records failed (listed in the shard files)")


def main() -> None:
    # The deepspeed launcher puts --local_rank=N before the subcommand; the rank is in the environment anyway.
    for arg in [a for a in sys.argv[1:] if a.startswith(("--local_rank=", "--local-rank="))]:
        sys.argv.remove(arg)
        os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    logging.basicConfig(level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # torch's own deprecation notices inside DeepSpeed's collectives, once per call: noise for users.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    app()


if __name__ == "__main__":
    main()
