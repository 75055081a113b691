"""The parameters of a clustering run (DAG cluster_acteurs), validated with clear errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ComparedField = Literal[
    "nom", "adresse", "code_postal", "ville", "distance", "siret", "telephone", "url", "email", "acteur_type"
]
COMPARED_FIELDS: tuple[str, ...] = ComparedField.__args__  # type: ignore[attr-defined]


class ParamsError(ValueError):
    """Parameters that cannot describe a run; the message names every wrong field."""


class ClusteringParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Empty = every source / every acteur type.
    sources: list[str] = Field(default_factory=list, description="source codes to include")
    acteur_types: list[str] = Field(default_factory=list, description="acteur type codes to include")
    compared_fields: list[ComparedField] = Field(default_factory=lambda: list(COMPARED_FIELDS))  # type: ignore[arg-type]
    match_threshold: float = Field(0.9, gt=0, lt=1, description="minimum match probability of a pair")
    max_distance_m: float = Field(300.0, gt=0, description="two located members never further apart")
    intra_source: bool = Field(False, description="may two acteurs of one source be merged")
    source_priority: list[str] = Field(default_factory=list, description="source codes, first = preferred")
    max_block_size: int = Field(300, ge=2, description="larger blocks are skipped and reported")
    dry_run: bool = False

    @field_validator("sources", "acteur_types", "source_priority", "compared_fields")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        seen = [v for i, v in enumerate(value) if v in value[:i]]
        if seen:
            raise ValueError(f"listed twice: {', '.join(sorted(set(seen)))}")
        return value

    @model_validator(mode="after")
    def _something_to_compare(self) -> ClusteringParams:
        if not {"nom", "adresse", "siret", "telephone", "email", "url"} & set(self.compared_fields):
            raise ValueError("compared_fields needs at least one of nom, adresse, siret, telephone, email, url")
        return self

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> ClusteringParams:
        """From the DAG's params (or any dict); ParamsError lists each wrong field."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"]) or "params"
                problems.append(f"{where}: {error['msg']}")
            raise ParamsError("invalid clustering params: " + "; ".join(problems)) from None
