//! Helpers shared by the control integration tests.
#![allow(dead_code)]

pub mod etcd;
pub mod fake;
