"""Built-in aggregation rules: one file per rule for turning many annotators' votes into training targets."""
