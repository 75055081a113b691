"""Entry point of sync_dags.sh (DAGS_SYNC_HELPER): one sync of the DAG bucket into the DAG folder.

The work is in the dags_delivery package beside this file (see dags_delivery/sync.py). Run as
``python3 -E -s scripts/dags_sync.py``: this directory, not the DAG folder, is on the path.
"""

import sys

from dags_delivery.sync import main

if __name__ == "__main__":
    sys.exit(main())
