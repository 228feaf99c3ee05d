"""Optional surfaces over the core (CLI, ...); each imports its own extra."""
