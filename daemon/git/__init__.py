"""Git changes: status, diffs, stage/unstage/discard, commit and log through the `git` command."""
