"""The build side: profile -> plan -> backend -> staged image with its
manifest -> published next to the output path. Never imports the verify
side."""
