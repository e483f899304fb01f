"""The `kefu` command: thin parsers that call the library."""
