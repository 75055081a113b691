{{ config(materialized='ephemeral') }}
{{ unit_relation('int_sources', ['source_id', 'identifiant_externe']) }}
