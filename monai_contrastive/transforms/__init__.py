from .array import RandMultiView
from .dictionary import RandMultiViewd, RandMultiViewD, RandMultiViewDict

__all__ = ["RandMultiView", "RandMultiViewd", "RandMultiViewD", "RandMultiViewDict"]
