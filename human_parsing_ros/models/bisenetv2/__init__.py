from .model import BiSeNetV2

__all__ = ["BiSeNetV2"]
