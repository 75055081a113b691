-- The data of failed source runs kept for diagnosis (qfdmo.pipeline.retention): where it is (an S3
-- prefix of the run-data bucket) and until when. A run that ends well leaves no row; the cleanup
-- of later runs removes the data of the rows past their date, then the rows.
CREATE TABLE qfdmo_platform.kept_run (
    location text PRIMARY KEY,
    dag_id text NOT NULL,
    run_id text NOT NULL,
    outcome text NOT NULL,
    kept_since timestamptz NOT NULL DEFAULT now(),
    kept_until timestamptz NOT NULL
);
CREATE INDEX kept_run_kept_until ON qfdmo_platform.kept_run (kept_until);
