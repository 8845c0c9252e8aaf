"""mmtrain: the unified (MetaMorph-style) model, its data pipeline and losses. See trainer/README.md."""

from trainer.config import STAGES, ConfigError, ModelConfig, StageConfig
from trainer.data import Collator, ConversationDataset, LengthGroupedSampler, Sample, Skipped
from trainer.model import Loaded, MMOutput, UnifiedModel, add_image_tokens, build_model, load, resolve_pad_id
from trainer.templates import TEMPLATES, ChatTemplate, ConversationEncoder, LabelError
from trainer.tiny import make_tiny
from trainer.trainable import apply_stage, apply_trainable

__all__ = [
    "STAGES", "TEMPLATES", "ChatTemplate", "Collator", "ConfigError", "ConversationDataset", "ConversationEncoder",
    "LabelError", "LengthGroupedSampler", "Loaded", "MMOutput", "ModelConfig", "Sample", "Skipped",
    "StageConfig", "UnifiedModel", "add_image_tokens", "apply_stage", "apply_trainable", "build_model", "load",
    "load_visualizer", "make_tiny", "resolve_pad_id",
]


def __getattr__(name: str):
    if name == "load_visualizer":  # lazily: diffusers is imported only by those who render pictures
        from trainer.visualizer.export import load_visualizer

        return load_visualizer
    raise AttributeError(name)
