//! The WaveSync PipeWire module (being written).
