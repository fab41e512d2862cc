"""Code that runs inside the sandbox: stdlib only, never imports the rest of `common`."""
