-- A month with more than 31 daily rows means the load duplicated data.
select weather_month, days
from {{ ref('weather_monthly') }}
where days > 31
