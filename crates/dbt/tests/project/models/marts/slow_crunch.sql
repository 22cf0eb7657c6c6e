{# Off unless `--vars '{slow: true}'`: a query that keeps bqemulator (DuckDB) busy for tens of
   seconds, so a test can stop dbt while a BigQuery job is running. #}
{{ config(enabled=var('slow', false)) }}
select sum(mod(a * b, 7)) as n
from unnest(generate_array(1, 100000)) as a
cross join unnest(generate_array(1, 50000)) as b
