"""The network side of the shell: listening ports of the daemon's descendants, and the proxy to them."""
