from .model import RPRCNN

__all__ = ["RPRCNN"]
