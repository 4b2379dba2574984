"""The `autobuild` command line."""
