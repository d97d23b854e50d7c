"""Background commands: spawn under a PTY, log output to JSONL, follow, feed input, kill."""
