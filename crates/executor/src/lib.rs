//! forge-executor: see docs/ARCHITECTURE.md for what this crate owns.
