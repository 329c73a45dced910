"""The `edgeswitch` command."""
