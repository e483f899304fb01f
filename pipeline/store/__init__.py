"""The only place the SQLite database is opened: migrations, rows, digests."""
