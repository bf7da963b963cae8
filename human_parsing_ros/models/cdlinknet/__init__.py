from .model import CDLinkNet

__all__ = ["CDLinkNet"]
