"""The control socket: JSON lines between the daemon and montagectl / montage-tui."""
