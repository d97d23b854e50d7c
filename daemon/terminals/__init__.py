"""Interactive terminals: PTY sessions over WebSocket, re-attach, and asciinema recordings."""
