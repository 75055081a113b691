"""Source declarations: one YAML file per source DAG, validated by a pydantic model.

`load_declarations()` runs at DAG parse time, so it only reads local files (no DB, no
network) and caches the parsed result for the life of the process.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qfdmo.sources.formats import feed_format

DECLARATIONS_DIR = Path(__file__).parent / "declarations"
MAPPINGS_DIR = Path(__file__).parent / "mappings"

CODE_PATTERN = r"^[0-9a-z_]+$"

class DeclarationError(ValueError):
    """A declaration file is missing a field, has a wrong value, or cannot be read."""


class Defaults(BaseModel):
    """Values given to every acteur of the source, for columns the feed does not carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    acteur_type: str | None = Field(default=None, pattern=CODE_PATTERN)
    public_accueilli: str | None = None
    labels: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    acteur_services: tuple[str, ...] = ()


class SourceDeclaration(BaseModel):
    """Everything that makes one source DAG differ from another."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=CODE_PATTERN, description="DAG source code; dag_id is source_<code>")
    libelle: str = Field(min_length=1)
    description: str = ""
    format: str = Field(description="a module of qfdmo/sources/formats/")
    feed_url: str = Field(pattern=r"^https?://")
    product_mapping: str = Field(pattern=CODE_PATTERN)
    # Either a fixed qfdmo_source code, or a column whose values name the source per row
    # (OCAB: `ecoorganisme` = "VALOBAT|ECOMAISON" gives ocab_valobat and ocab_ecomaison).
    source_code: str | None = Field(default=None, pattern=CODE_PATTERN)
    source_code_column: str | None = None
    source_code_prefix: str = ""
    owned_source_codes: tuple[str, ...] = ()
    label_bonus_reparation: str | None = None
    returnable_objects: bool = False
    ignore_siret: bool = False
    nomenclature_url: str | None = Field(default=None, pattern=r"^https?://")
    defaults: Defaults = Defaults()

    @field_validator("format")
    @classmethod
    def _known_format(cls, name: str) -> str:
        feed_format(name)  # UnknownFormatError (a ValueError) names the known ones
        return name

    @model_validator(mode="after")
    def _check_source(self) -> SourceDeclaration:
        if (self.source_code is None) == (self.source_code_column is None):
            raise ValueError("set exactly one of source_code or source_code_column")
        if self.source_code_column is not None and not self.owned_source_codes:
            raise ValueError("owned_source_codes is required with source_code_column")
        for code in self.owned_source_codes:
            if not re.match(CODE_PATTERN, code):
                raise ValueError(f"owned_source_codes: {code!r} is not a valid code")
        if feed_format(self.format).needs_nomenclature and self.nomenclature_url is None:
            raise ValueError(f"nomenclature_url is required for format {self.format}")
        if not (MAPPINGS_DIR / f"{self.product_mapping}.csv").is_file():
            raise ValueError(f"product_mapping: no file mappings/{self.product_mapping}.csv")
        return self

    @property
    def dag_id(self) -> str:
        return f"source_{self.code}"

    @property
    def source_codes(self) -> tuple[str, ...]:
        """Source codes whose acteurs this DAG owns (and may deactivate)."""
        if self.owned_source_codes:
            return self.owned_source_codes
        assert self.source_code is not None
        return (self.source_code,)


def _format_error(path: Path, error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(file)"
        parts.append(f"field {field!r}: {item['msg']}")
    return f"{path.name}: " + "; ".join(parts)


def parse_declaration(path: Path) -> SourceDeclaration:
    """Read and validate one declaration file; errors name the file and the field."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise DeclarationError(f"{path.name}: cannot read YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DeclarationError(f"{path.name}: expected a mapping of fields at top level")
    try:
        declaration = SourceDeclaration.model_validate(data)
    except ValidationError as exc:
        raise DeclarationError(_format_error(path, exc)) from None
    if declaration.code != path.stem:
        raise DeclarationError(
            f"{path.name}: field 'code': {declaration.code!r} must equal the file name {path.stem!r}"
        )
    return declaration


@functools.lru_cache(maxsize=8)
def _load(directory: Path) -> dict[str, SourceDeclaration]:
    return {path.stem: parse_declaration(path) for path in sorted(directory.glob("*.yaml"))}


def load_declarations(directory: Path | None = None) -> dict[str, SourceDeclaration]:
    """All declarations by source code (cached; safe to call at DAG parse time)."""
    # A shallow copy so callers cannot alter the cache; the models themselves are frozen.
    return dict(_load((directory or DECLARATIONS_DIR).resolve()))
