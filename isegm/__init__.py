"""skipclick: click-based interactive segmentation with late-fusion models."""
__version__ = "0.1.0"
