"""The verify side: testinfra checks run against an image, offline and
booted, from what its manifest says it holds. Never imports the build
side."""
