"""Applications, the top layer: the command line, ``compare``, ``paper``, ``study`` and the suites they read. They
compose the layers below; nothing below imports them."""
