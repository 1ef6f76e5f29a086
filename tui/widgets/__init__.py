"""Widgets and screens of montage-tui; each draws daemon data it is handed and never reads the socket."""
