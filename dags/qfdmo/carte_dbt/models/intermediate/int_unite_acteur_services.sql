{{ config(materialized='ephemeral') }}
{{ unit_relation('int_acteur_services', ['acteurservice_id']) }}
