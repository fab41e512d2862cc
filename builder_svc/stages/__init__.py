"""The six build stages, one module each; ``builder_svc.pipeline`` runs them in order."""
