"""What a map explains, every target in one place: the prompt embedding (``text``), a linear probe's class logit
(``probe``) and a classifier's own logit (``head``), each declared in ``TARGETS``."""
