"""Host plumbing, under both the build and the verify side: running
commands, checking the host, mounting images, cleaning up, progress lines."""
