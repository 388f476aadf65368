//! placeholder: the API core helper owns this file.
pub mod runtime;
pub mod views;
