-- One row per month: how wet, warm and windy Seattle was, and its most common weather.
with daily as (
    select
        date_trunc(weather_date, month) as weather_month,
        precipitation_mm,
        temp_max_c,
        temp_min_c,
        wind_mps,
        weather
    from {{ ref('stg_seattle_weather') }}
)

select
    weather_month,
    count(*) as days,
    round(sum(precipitation_mm), 1) as precipitation_mm,
    round(avg(temp_max_c), 2) as avg_temp_max_c,
    round(avg(temp_min_c), 2) as avg_temp_min_c,
    round(avg(wind_mps), 2) as avg_wind_mps,
    countif(weather = 'rain') as rainy_days,
    countif(weather = 'sun') as sunny_days
from daily
group by weather_month
