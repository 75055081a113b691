-- The platform's own schema in the carte database: nothing of the platform's is created in the
-- webapp's tables or at run time. Applied everywhere, preprod and prod included
-- (`python -m qfdmo.carte_db migrate --platform-only`); migrate.py keeps its bookkeeping here too.

CREATE SCHEMA IF NOT EXISTS qfdmo_platform;
-- Per source DAG: the fingerprint of the last applied run and a witness of the carte state right
-- after it (qfdmo.pipeline.fingerprint).
CREATE TABLE qfdmo_platform.applied_feed (
    source text PRIMARY KEY,
    fingerprint text NOT NULL,
    witness text NOT NULL,
    summary text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
-- Until now the pipeline created that table itself, in schema qfdmo_pipeline, at its first run.
DO $$
BEGIN
    IF to_regclass('qfdmo_pipeline.applied_feed') IS NOT NULL THEN
        INSERT INTO qfdmo_platform.applied_feed (source, fingerprint, witness, summary, applied_at)
        SELECT source, fingerprint, witness, summary, applied_at FROM qfdmo_pipeline.applied_feed;
        DROP TABLE qfdmo_pipeline.applied_feed;
        DROP SCHEMA IF EXISTS qfdmo_pipeline;
    END IF;
END $$;
-- Per-run staging tables of the ingestion (created and dropped by each run).
CREATE SCHEMA IF NOT EXISTS qfdmo_staging;
