"""Xmodel: pretrain, tune and evaluate small language models the way the Xmodel-LM and Xmodel-2 reports do.

Importing the package registers the model with transformers' Auto classes under model_type ``xmodel``, so
``AutoModelForCausalLM.from_pretrained(path)`` loads an Xmodel checkpoint.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .model import XmodelConfig, XmodelForCausalLM, XmodelModel, mup_param_groups

__version__ = "0.1.0"

AutoConfig.register("xmodel", XmodelConfig, exist_ok=True)
AutoModel.register(XmodelConfig, XmodelModel, exist_ok=True)
AutoModelForCausalLM.register(XmodelConfig, XmodelForCausalLM, exist_ok=True)

__all__ = ["XmodelConfig", "XmodelForCausalLM", "XmodelModel", "mup_param_groups", "__version__"]
