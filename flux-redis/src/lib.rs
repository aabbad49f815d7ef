//! Redis storage for Flux.
