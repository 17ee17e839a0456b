//! forge-cache: see docs/ARCHITECTURE.md for what this crate owns.
