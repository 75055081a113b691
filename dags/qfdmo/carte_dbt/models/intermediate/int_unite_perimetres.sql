{{ config(materialized='ephemeral') }}
{{ unit_relation('int_perimetres', ['type', 'valeur']) }}
