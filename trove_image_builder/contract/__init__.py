"""The image contract: what an image must hold (in-image paths, units, the
files Trove injects at boot) and what a given image is expected to hold,
read from its manifest. The build side writes it; the verify side reads it."""
