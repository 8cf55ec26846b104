"""monai-contrastive: contrastive learning methods for medical imaging as a MONAI plugin."""

__version__ = "0.2.0"
