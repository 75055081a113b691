"""The carte database: schema migrations, reference data, staging/diff/apply of runs.

Public API (see each module's docstring):
- migrate(dsn) / `python -m qfdmo.carte_db migrate --dsn DSN [--platform-only]`   (migrate.py)
- check_contract(dsn) / `python -m qfdmo.carte_db check-contract`: the database against
  webapp_schema.yml, the webapp's tables   (contract.py)
- ReferenceCodes, load_reference_codes(conn), reference_codes_from_files()   (reference.py)
- load_run_files(), stage() (staging.py, its checks in checks.py), diff() (diffing.py), apply() (applying.py),
  drop_staging() (run_tables.py); StageResult, DiffResult, ApplyResult, StagingError (results.py);
  their SQL in statements.py
- file names and columns of the normalised run files, what the apply does with each
  (staging_format.py); the one writer of those run files, RunFileWriter (run_files.py)
"""

# Names are imported on first use (PEP 562): importing the staging format or the reference
# codes must not pull psycopg and the ingestion SQL into DAG parsing.

from __future__ import annotations

from qfdmo import lazy_exports

_EXPORTS = {
    "ApplyResult": "qfdmo.carte_db.results",
    "DiffResult": "qfdmo.carte_db.results",
    "ReferenceCodes": "qfdmo.carte_db.reference",
    "StageResult": "qfdmo.carte_db.results",
    "StagingError": "qfdmo.carte_db.results",
    "apply": "qfdmo.carte_db.applying",
    "check_contract": "qfdmo.carte_db.contract",
    "diff": "qfdmo.carte_db.diffing",
    "drop_staging": "qfdmo.carte_db.run_tables",
    "load_reference_codes": "qfdmo.carte_db.reference",
    "load_run_files": "qfdmo.carte_db.staging",
    "load_reference_data": "qfdmo.carte_db.reference",
    "migrate": "qfdmo.carte_db.migrate",
    "reference_codes_from_files": "qfdmo.carte_db.reference",
    "stage": "qfdmo.carte_db.staging",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
