{#- Post-hook of every table model: statistics for what the next models' joins and filters and the
    swap's diff use (keys, codes, flags, dates), not for the free text of an acteur nor its
    geography: PostGIS's spatial statistics and the text histograms cost many times the table's
    own writing, and no statement of the build or of the swap filters on them. -#}
{%- macro analyze_for_joins(relation) -%}
    {%- set skipped = overlay_text_columns() -%}
    {%- set columns = [] -%}
    {%- for column in adapter.get_columns_in_relation(relation) -%}
        {%- if column.name not in skipped and column.dtype not in ('USER-DEFINED', 'geography', 'geometry') -%}
            {%- do columns.append(adapter.quote(column.name)) -%}
        {%- endif -%}
    {%- endfor -%}
    analyze {{ relation }}{% if columns %} ({{ columns | join(', ') }}){% endif %}
{%- endmacro -%}
