"""Command modules; each adds its commands to the tree in platformctl.cli."""
