select
    extract(year from year) as generation_year,
    source as energy_source,
    net_generation as net_generation_mwh
from {{ source('raw', 'iowa_electricity') }}
