{#- Rule 3: publics the carte does not show (case-insensitive). -#}
{%- macro public_is_shown(column) -%}
lower(coalesce({{ column }}, '')) not in ('aucun', 'professionnels')
{%- endmacro -%}

{#- Rule 2: a parent's lieu_prestation from its children, strongest first. -#}
{%- macro lieu_prestation_rank(column) -%}
case {{ column }} when 'SUR_PLACE_OU_A_DOMICILE' then 3 when 'A_DOMICILE' then 2
                  when 'SUR_PLACE' then 1 end
{%- endmacro -%}

{%- macro lieu_prestation_of_rank(rank) -%}
case {{ rank }} when 3 then 'SUR_PLACE_OU_A_DOMICILE' when 2 then 'A_DOMICILE'
                when 1 then 'SUR_PLACE' end
{%- endmacro -%}

{#- Rule 6: mobile numbers (06, 07) are not published. -#}
{%- macro is_mobile_number(column) -%}
(regexp_replace({{ column }}, '[^0-9+]', '', 'g') ~ '^(0|\+33|0033)[67]')
{%- endmacro -%}
