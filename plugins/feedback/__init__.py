"""Built-in feedback plugins: one file per method."""
