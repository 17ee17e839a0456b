//! The planner's integration tests, one binary with a module per concern.

mod common;
mod digests;
mod errors;
mod fixtures;
mod graph;
mod named;
mod render;
mod scoping;
