"""Wire schemas: the contract between hub and node (pydantic models, versioned)."""
