"""The checks an image must pass, written as testinfra tests.

``test_offline.py`` runs against the image's file system mounted read-only
(testinfra's chroot connection); ``test_booted.py`` against the booted image
over ssh. Both read the ``expect`` fixture (trove_image_builder.contract.expectations)."""
