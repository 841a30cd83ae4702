"""med-hf: the MEDFE inpainting network as a Hugging Face transformers model and diffusers pipeline.

The public classes load on first use: `import med_hf` stays instant (the command-line tools answer Ctrl-C at
once), and importing transformers or diffusers is paid only by code that uses them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .configuration_med import MEDConfig
    from .modeling_med import MEDInpaintingOutput, MEDModel, MEDPreTrainedModel
    from .pipeline_med import MEDInpaintPipeline

_MODULES = {
    "MEDConfig": "configuration_med",
    "MEDInpaintingOutput": "modeling_med",
    "MEDModel": "modeling_med",
    "MEDPreTrainedModel": "modeling_med",
    "MEDInpaintPipeline": "pipeline_med",
}


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _register_with_auto_classes()
    return getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)


def _register_with_auto_classes() -> None:
    """`AutoConfig` / `AutoModel` know the "med" model type once med-hf's classes are used."""
    from transformers import AutoConfig, AutoModel

    from .configuration_med import MEDConfig
    from .modeling_med import MEDModel

    AutoConfig.register(MEDConfig.model_type, MEDConfig, exist_ok=True)
    AutoModel.register(MEDConfig, MEDModel, exist_ok=True)


__all__ = ["MEDConfig", "MEDInpaintPipeline", "MEDInpaintingOutput", "MEDModel", "MEDPreTrainedModel"]
