"""med-hf: the MEDFE inpainting network as a Hugging Face transformers model and diffusers pipeline."""

from transformers import AutoConfig, AutoModel

from .configuration_med import MEDConfig
from .modeling_med import MEDInpaintingOutput, MEDModel, MEDPreTrainedModel

AutoConfig.register(MEDConfig.model_type, MEDConfig)
AutoModel.register(MEDConfig, MEDModel)
# Saved folders carry `auto_map` and the source files, so they load with trust_remote_code=True anywhere.
MEDConfig.register_for_auto_class()
MEDModel.register_for_auto_class("AutoModel")

__all__ = ["MEDConfig", "MEDInpaintingOutput", "MEDModel", "MEDPreTrainedModel"]
