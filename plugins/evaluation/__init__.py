"""Built-in evaluation plugins: one file per method."""
