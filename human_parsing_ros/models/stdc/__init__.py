from .model import STDCSeg

__all__ = ["STDCSeg"]
