"""What the carte shows, computed from the webapp's acteurs and revisions.

- `dbt_runner`: runs the dbt project shipped beside the DAGs (dags/qfdmo/carte_dbt), in process,
  profile from the carte connection, target/log paths on a scratch folder.
- `swap`: copies the built models into the webapp's qfdmo_displayed* / qfdmo_vue* tables in one
  transaction, applying only the difference, behind a guard on the number of displayed acteurs.
- `report`: the compute_acteurs run report.
- `opendata`: the weekly open-data CSV, its checks, its Table Schema and its upload.
"""

from qfdmo.carte.dbt_runner import DbtBuildError, DbtResult, build
from qfdmo.carte.swap import SwapResult, guard_check, swap

__all__ = ["DbtBuildError", "DbtResult", "SwapResult", "build", "guard_check", "swap"]
