"""Everything about the file system: path resolution, per-chat working directories, file endpoints."""
