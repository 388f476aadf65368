//! placeholder (VIEWS)
