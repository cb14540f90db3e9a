"""From a built image to the cloud, and what is inside it: publishing to
Glance (glance.py), registering the datastore version in Trove
(register.py), a CycloneDX SBOM (sbom.py) and the difference between two
images (diff.py). Everything here reads the image's manifest
(manifests.py), never the profile or the elements: an image is published
as what it was built to be."""
