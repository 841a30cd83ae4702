"""med-hf: the MEDFE inpainting network as a Hugging Face transformers model and diffusers pipeline."""

from typing import TYPE_CHECKING

from transformers import AutoConfig, AutoModel

from .configuration_med import MEDConfig
from .modeling_med import MEDInpaintingOutput, MEDModel, MEDPreTrainedModel

if TYPE_CHECKING:
    from .pipeline_med import MEDInpaintPipeline

AutoConfig.register(MEDConfig.model_type, MEDConfig)
AutoModel.register(MEDConfig, MEDModel)
# Saved folders carry `auto_map` and the source files, so they load with trust_remote_code=True anywhere.
MEDConfig.register_for_auto_class()
MEDModel.register_for_auto_class("AutoModel")


def __getattr__(name: str):
    # diffusers is slow to import; only pipeline users pay for it.
    if name == "MEDInpaintPipeline":
        from .pipeline_med import MEDInpaintPipeline

        return MEDInpaintPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MEDConfig", "MEDInpaintPipeline", "MEDInpaintingOutput", "MEDModel", "MEDPreTrainedModel"]
