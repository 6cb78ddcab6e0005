"""The dependency analysis: channel layouts followed through the graph (``rules/``, one module per op
family) into the channel groups that must be cut together."""
