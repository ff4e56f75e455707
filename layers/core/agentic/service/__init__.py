"""Task lifecycle, the pipeline's step operations, the local runner and the event stream."""
