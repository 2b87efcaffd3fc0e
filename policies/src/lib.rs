//! Ferry's domain, free of I/O: the resource kinds and their validation, the cost model,
//! and the placement engine that decides where workloads run.
//!
//! Architecture invariant: nothing here performs I/O, spawns a task or reads a clock.
//! Decisions are functions of their inputs, so the same input gives the same plan.

pub mod control;
pub mod engine;
pub mod model;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod window;
