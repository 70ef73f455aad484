"""Built-in preference_models plugins: one file per method."""
