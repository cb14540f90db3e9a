# the kernel package the image boots (build/plan.py: os.kernel); empty:
# the OS element's own
export TROVE_GUEST_KERNEL=${TROVE_GUEST_KERNEL:-}
