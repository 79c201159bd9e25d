"""A sandbox for untrusted code: jailed program, trusted tests on the host side."""
