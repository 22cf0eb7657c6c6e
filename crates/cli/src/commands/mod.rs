pub mod dbt;
pub mod extract;
pub mod load;
