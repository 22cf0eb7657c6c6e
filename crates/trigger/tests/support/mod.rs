//! Test support: the fake Cloud Run Admin API and its discovery-document validator.
//! Each test binary uses a different part of it.
#![allow(dead_code)]

pub mod discovery;
pub mod fake;
