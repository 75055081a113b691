{{ config(materialized='ephemeral') }}
{{ unit_relation('int_labels', ['labelqualite_id']) }}
