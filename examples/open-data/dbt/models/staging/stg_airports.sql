select
    iata as airport_code,
    name as airport_name,
    city,
    state,
    country,
    latitude,
    longitude
from {{ source('raw', 'airports') }}
