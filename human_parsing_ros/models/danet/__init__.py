from .model import DANet

__all__ = ["DANet"]
