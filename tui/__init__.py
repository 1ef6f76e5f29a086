"""montage-tui: a Textual front end that watches and steers montaged over its control socket."""
