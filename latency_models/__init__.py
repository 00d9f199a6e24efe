"""edgenas: latency_models."""
