"""The visualizer: a diffusion UNet conditioned on stage 2's image tokens, so predicted images become pictures.

    recipe (`config`) → train (`train`, DeepSpeed like the stages) → export/ (`export`) → `load_visualizer`
    → `render(tokens)` / `generate_pictures(model, prompt)` (`render`)

Imports diffusers lazily: `import trainer` stays light.
"""

from trainer.visualizer.config import ConditionSpec, VisualizerRecipe, load_visualizer_recipe

__all__ = ["ConditionSpec", "VisualizerRecipe", "generate_pictures", "load_visualizer", "load_visualizer_recipe",
           "render", "train_visualizer"]


def __getattr__(name: str):
    if name in ("load_visualizer", "Visualizer", "check_compatible"):
        from trainer.visualizer import export

        return getattr(export, name)
    if name in ("render", "generate_pictures"):
        from trainer.visualizer import render

        return getattr(render, name)
    if name == "train_visualizer":
        from trainer.visualizer.train import train_visualizer

        return train_visualizer
    raise AttributeError(name)
