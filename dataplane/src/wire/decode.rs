//! One-line decoding of frames (filled in by the tools work).
