{{ config(materialized='view') }}
{{ unit_relation('int_perimetres', ['type', 'valeur']) }}
