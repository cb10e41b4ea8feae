"""Model architectures: bundled Hugging Face configs and the ModelSpec derived from them."""

from apex_fast.models.config import spec_from_config
from apex_fast.models.loader import list_models, load_model
from apex_fast.models.names import model_aliases, resolve_model_name
from apex_fast.models.spec import ModelSpec

__all__ = [
    "ModelSpec",
    "list_models",
    "load_model",
    "model_aliases",
    "resolve_model_name",
    "spec_from_config",
]
