select
  name,
  cast(horsepower as int64) as horsepower,
  origin
from {{ source('raw', 'cars') }}
where name is not null
