//! IO-free glue between the core, the state machine and storage (stub).
