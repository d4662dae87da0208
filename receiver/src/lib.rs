//! receiver library (being written).
