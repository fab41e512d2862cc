"""Workflow service: see DESIGN.md and the package's server.py."""
