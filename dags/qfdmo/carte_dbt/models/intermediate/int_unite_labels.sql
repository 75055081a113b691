{{ config(materialized='view') }}
{{ unit_relation('int_labels', ['labelqualite_id']) }}
