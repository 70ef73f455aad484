"""Built-in usage plugins: one file per method."""
