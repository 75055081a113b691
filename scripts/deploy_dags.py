"""Entry point of scripts/deploy_dags.sh: upload dags/ to the DAG bucket, the manifest last.

Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or any botocore credential source),
DAGS_BUCKET ("bucket", "bucket/prefix" or "s3://bucket/prefix"), DAGS_S3_PREFIX,
S3_ENDPOINT_URL (bare host or URL; default the Cellar host), DAGS_SOURCE_DIR (default ./dags),
DEPLOY_ID (default GITHUB_SHA or a timestamp). The work is in dags_delivery/deploy.py.
"""

import sys

from dags_delivery.deploy import main

if __name__ == "__main__":
    sys.exit(main())
