//! Frame builders for fixtures and generators (filled in by the tools work).
