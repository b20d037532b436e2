"""The node's side of the hub channel: its key, its enrollment, the signed client and the
outbound-only agent that long-polls the hub and answers tasks (DESIGN.md, decision 1)."""
