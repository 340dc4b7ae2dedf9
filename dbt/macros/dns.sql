{#- The DNS name as compared: lower case, without the trailing root dot(s). -#}
{% macro dns_name(query) -%}
    rtrim(lower({{ query }}), '.')
{%- endmacro %}

{#- Shannon entropy of a string in bits per character (log2), 0 for the empty string. -#}
{% macro shannon_entropy(text) -%}
    list_aggregate(string_split({{ text }}, ''), 'entropy')
{%- endmacro %}

{#- The last two dot-separated labels: a naive registered domain (no public-suffix list). -#}
{% macro registered_domain(name) -%}
    nullif(array_to_string(list_slice(string_split({{ name }}, '.'), -2, -1), '.'), '')
{%- endmacro %}
