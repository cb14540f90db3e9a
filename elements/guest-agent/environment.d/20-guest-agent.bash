export TROVE_GUEST_AGENT_INSTALL=${TROVE_GUEST_AGENT_INSTALL:-release}
export TROVE_GUEST_AGENT_VERSION=${TROVE_GUEST_AGENT_VERSION:-}
export TROVE_GUEST_AGENT_SOURCE=${TROVE_GUEST_AGENT_SOURCE:-}
export TROVE_GUEST_AGENT_PIP_INDEX=${TROVE_GUEST_AGENT_PIP_INDEX:-}
export TROVE_BUILD_CA_BUNDLE=${TROVE_BUILD_CA_BUNDLE:-}
# 1: prune the agent's venv to what the agent can load (production images
# with the agent from a release; build/plan.py sets it)
export TROVE_GUEST_AGENT_PRUNE=${TROVE_GUEST_AGENT_PRUNE:-0}
