select
    month as employment_month,
    nonfarm,
    private,
    government
from {{ source('raw', 'us_employment') }}
