"""The ``tdev`` command line: start the mesh, check it, and call the services."""
