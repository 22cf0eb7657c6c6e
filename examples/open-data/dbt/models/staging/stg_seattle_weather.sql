-- The CSV spells dates 2012/01/01, which CSV inference keeps as text: parse here.
select
    parse_date('%Y/%m/%d', date) as weather_date,
    precipitation as precipitation_mm,
    temp_max as temp_max_c,
    temp_min as temp_min_c,
    wind as wind_mps,
    weather
from {{ source('raw', 'seattle_weather') }}
