from .model import DDRNet

__all__ = ["DDRNet"]
