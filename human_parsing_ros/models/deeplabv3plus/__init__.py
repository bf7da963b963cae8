from .model import DeepLabV3Plus

__all__ = ["DeepLabV3Plus"]
