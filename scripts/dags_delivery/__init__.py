"""DAG delivery: deploy ``dags/`` to the environment's S3 bucket, sync the bucket into the DAG folder.

Modules, by responsibility (each imported by the ones after it):

- ``errors``: exit codes and the error that carries one;
- ``keys``: which object keys may become files, which are skipped or protected, content hashes;
- ``s3``: the boto3 client and every S3 call (listing, reads), error descriptions, secret scrubbing;
- ``manifest``: the deploy manifest (written last by a deploy, trusted by a sync);
- ``settings``: the typed settings of a sync and of a deploy, read once from the environment;
- ``releases``: the release directories beside the DAG folder, the symlink switch, the state file;
- ``sync``: one sync (``sync_dags.sh`` -> ``scripts/dags_sync.py``);
- ``deploy``: one deploy (``scripts/deploy_dags.sh`` -> ``scripts/deploy_dags.py``).

The sync runs with ``python3 -E -s`` from outside the DAG folder and imports nothing from it: a
synced file named like a module must never be loaded by the code that publishes it.
"""
