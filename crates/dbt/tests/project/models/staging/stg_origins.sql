select distinct origin
from {{ source('raw', 'cars') }}
where origin is not null
