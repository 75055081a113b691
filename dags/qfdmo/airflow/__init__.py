"""The Airflow side of the platform's DAGs: operators, connection lookup and run decisions that the
DAG files wire together. Imported when DAG files are parsed: nothing here touches a database or the
network at import."""
