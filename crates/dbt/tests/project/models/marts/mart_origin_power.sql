select
  o.origin,
  count(*) as cars,
  max(c.horsepower) as max_horsepower
from {{ ref('stg_origins') }} as o
join {{ ref('stg_cars') }} as c on c.origin = o.origin
group by o.origin
