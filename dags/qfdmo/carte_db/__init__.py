"""The carte database: schema migrations, reference data, staging/diff/apply of runs.

Public API (see each module's docstring):
- migrate(dsn) / `python -m qfdmo.carte_db migrate --dsn DSN`   (migrate.py)
- ReferenceCodes, load_reference_codes(conn), reference_codes_from_files()   (reference.py)
- stage(), diff(), apply(), drop_staging(), StageResult, DiffResult, ApplyResult   (ingest.py)
- column order of the normalised run files and a COPY writer   (staging_format.py)
"""

from qfdmo.carte_db.ingest import (
    ApplyResult,
    DiffResult,
    StageResult,
    StagingError,
    apply,
    diff,
    drop_staging,
    stage,
)
from qfdmo.carte_db.migrate import migrate
from qfdmo.carte_db.reference import (
    ReferenceCodes,
    load_reference_codes,
    load_reference_data,
    reference_codes_from_files,
)

__all__ = [
    "ApplyResult",
    "DiffResult",
    "ReferenceCodes",
    "StageResult",
    "StagingError",
    "apply",
    "diff",
    "drop_staging",
    "load_reference_codes",
    "load_reference_data",
    "migrate",
    "reference_codes_from_files",
    "stage",
]
