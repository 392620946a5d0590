"""A small application: what the example project's tests test."""
