"""Shared runtime of the T-Developer services: no service logic, never imports a service."""
