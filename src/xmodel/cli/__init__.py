"""The `xmodel` command line."""
