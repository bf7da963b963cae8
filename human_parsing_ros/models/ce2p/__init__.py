from .model import CE2P

__all__ = ["CE2P"]
