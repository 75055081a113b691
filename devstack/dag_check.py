"""Imports every DAG file in a fresh interpreter with the network cut, timing each file.

`python -m devstack.dag_check [DAGS_FOLDER]` prints one JSON document (its last line): per-file parse time, import
errors, and each DAG's owner, tags, description and retries. Any socket connection attempted while
importing (a database, an HTTP call) is refused and reported as an import error, so DAG files that
touch a database or the network at import time fail the integrity tests.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path


class NetworkAtImportError(RuntimeError):
    pass


def _refuse(*args, **kwargs):
    raise NetworkAtImportError(f"network/database access at import time: {args[1:] or kwargs}")


def check(dags_folder: Path) -> dict:
    # Settings that make any DB access fail fast rather than hang.
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="dag-check-"))
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "postgresql+psycopg2://nobody@127.0.0.1:9/none"
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    # As the dag-processor does: the DAG folder is importable (dags/qfdmo is `qfdmo`).
    sys.path.insert(0, str(dags_folder))
    started = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.file import list_py_file_paths

    airflow_import = time.perf_counter() - started
    socket.socket.connect = _refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = _refuse  # type: ignore[method-assign]
    socket.create_connection = _refuse

    files = {}
    dags = {}
    folder_started = time.perf_counter()
    bag = DagBag(dag_folder=str(dags_folder), collect_dags=False, bundle_path=dags_folder)
    for path in list_py_file_paths(str(dags_folder)):
        file_started = time.perf_counter()
        found = bag.process_file(str(path), only_if_updated=False)
        files[str(Path(path).relative_to(dags_folder))] = round(time.perf_counter() - file_started, 3)
        for dag in found:
            dags[dag.dag_id] = {
                "file": str(Path(path).relative_to(dags_folder)),
                "owner": dag.owner,
                "tags": sorted(dag.tags or []),
                "description": dag.description,
                "default_retries": (dag.default_args or {}).get("retries"),
                "retries": {task.task_id: task.retries for task in dag.tasks},
            }
    errors = {str(Path(k).relative_to(dags_folder)) if Path(k).is_absolute() else k: v
              for k, v in bag.import_errors.items()}
    return {
        "airflow_import_s": round(airflow_import, 3),
        "folder_s": round(time.perf_counter() - folder_started, 3),
        "files": files,
        "dags": dags,
        "import_errors": errors,
    }


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "dags")
    # Airflow logs to stdout too: the report is the last line.
    print(json.dumps(check(folder.resolve())))
