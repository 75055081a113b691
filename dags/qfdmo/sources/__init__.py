"""Source declarations and the normalisation of their feeds (step 3 of a source DAG)."""

# Names are imported on first use (PEP 562): DAG files import the declarations at parse
# time and must not pay for the normalisation rules or psycopg.

from __future__ import annotations

from qfdmo import lazy_exports

_EXPORTS = {
    "ConfigurationError": "qfdmo.sources.configuration",
    "DeclarationError": "qfdmo.sources.declaration",
    "MappingError": "qfdmo.sources.mapping",
    "NormalisationContext": "qfdmo.sources.configuration",
    "NormalisationReport": "qfdmo.sources.report",
    "ProductMapping": "qfdmo.sources.mapping",
    "SourceDeclaration": "qfdmo.sources.declaration",
    "check_configuration": "qfdmo.sources.configuration",
    "load_declarations": "qfdmo.sources.declaration",
    "load_mapping": "qfdmo.sources.mapping",
    "normalise": "qfdmo.sources.normalisation",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
