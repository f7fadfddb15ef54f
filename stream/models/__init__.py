"""The online models: factor tables, rating MF, implicit MF, the click model, the bundle."""

from stream.models.bundle import ModelBundle
from stream.models.click import EngagementModel
from stream.models.factors import FactorModel, FactorTable
from stream.models.implicit_mf import ImplicitMF
from stream.models.rating_mf import OnlineMF

__all__ = [
    "EngagementModel",
    "FactorModel",
    "FactorTable",
    "ImplicitMF",
    "ModelBundle",
    "OnlineMF",
]
