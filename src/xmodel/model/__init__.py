"""The Xmodel decoder, its configuration, presets and μP optimiser groups."""

from .configuration_xmodel import XmodelConfig
from .modeling_xmodel import XmodelForCausalLM, XmodelModel, XmodelPreTrainedModel
from .mup import mup_param_groups

__all__ = ["XmodelConfig", "XmodelForCausalLM", "XmodelModel", "XmodelPreTrainedModel", "mup_param_groups"]
