"""The node's query engine: cohort definitions evaluated on the store, under disclosure control."""
