# In-image paths and unit names, named once for every element and for the
# project's Python side (trove_image_builder/contract/paths.py reads this
# file: keep to plain 'export NAME=value' lines). Constants, not settings.
export TROVE_PATH_CONF=/etc/trove
export TROVE_PATH_INJECTED=/etc/trove/conf.d
export TROVE_PATH_CERTS=/etc/trove/certs
export TROVE_PATH_STATE=/var/lib/trove
export TROVE_PATH_LOG=/var/log/trove
export TROVE_PATH_AGENT_VENV=/opt/guest-agent-venv
export TROVE_UNIT_AGENT=guest-agent.service
export TROVE_PATH_CERT_STAGING=/var/lib/trove-certs/incoming
export TROVE_PATH_IMAGES=/var/lib/trove-images
export TROVE_PATH_DEV_MARKER=/etc/trove/DEVELOPMENT-IMAGE
export TROVE_PATH_AGENT_STATE=/opt/trove-guestagent
