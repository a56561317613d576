"""robustft: relevance-guided fine-tuning of Vision Transformers.

The method reads top to bottom in three modules that import no Lightning or Hydra:
``robustft.relevance`` (the relevance rule), ``robustft.losses`` (the loss terms) and
``robustft.backbones`` (what the method needs from a model; the timm, Hugging Face and OpenCLIP
families).
Everything else wraps them.
"""

__version__ = "0.1.0"
