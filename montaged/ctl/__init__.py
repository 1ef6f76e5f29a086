"""``montagectl``: the scripts' and operators' client for a running montaged's control socket.

``parser`` builds the command line, ``connect`` opens the socket (or says in one line why it
cannot), ``commands`` runs the request/reply commands, ``render`` turns replies into tables and
``watch`` draws live progress from the event stream (``watch`` and ``submit --wait``).
"""
