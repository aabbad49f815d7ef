//! The C ABI of Flux.
