//! The broker: the service behind `ferry demo` and `ferry serve`.

pub mod api;
pub mod audit;
pub mod blocking_kv;
pub mod clock;
pub mod controllers;
pub mod dashboard;
pub mod demo;
pub mod events;
pub mod gke;
pub mod history;
pub mod listener;
pub mod metrics;
pub mod migration;
pub mod openapi;
pub mod policies;
pub mod provisioning;
pub mod run;
pub mod serve;
pub mod sims;
pub mod world;
