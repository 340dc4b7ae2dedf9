"""Domain slices of the code location; each package's `build(settings)` returns its Definitions."""
