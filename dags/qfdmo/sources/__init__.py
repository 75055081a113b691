"""Source declarations and the normalisation of their feeds (step 3 of a source DAG)."""

from qfdmo.sources.declaration import DeclarationError, SourceDeclaration, load_declarations
from qfdmo.sources.mapping import MappingError, ProductMapping, load_mapping
from qfdmo.sources.normalisation import (
    ConfigurationError,
    NormalisationContext,
    check_configuration,
    normalise,
)
from qfdmo.sources.report import NormalisationReport

__all__ = [
    "ConfigurationError",
    "DeclarationError",
    "MappingError",
    "NormalisationContext",
    "NormalisationReport",
    "ProductMapping",
    "SourceDeclaration",
    "check_configuration",
    "load_declarations",
    "load_mapping",
    "normalise",
]
