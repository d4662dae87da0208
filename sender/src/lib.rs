//! sender library (being written).
