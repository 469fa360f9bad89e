"""A whole study: config, scan discovery, the per-scan and study-level pipeline."""
