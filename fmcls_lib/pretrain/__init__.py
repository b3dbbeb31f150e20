"""Building the embedded models (tiny CLIPs, and later the generator and the SSL encoder)."""
