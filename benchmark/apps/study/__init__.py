"""The user study of the AFT paper (appendix A.4, Table 10, Fig. 16) as a kit: build, answer, score.

The study is the "distinct" task of HIVE (Kim et al. 2022, "HIVE: Evaluating the human interpretability of
visual explanations"): a participant sees an image and four saliency maps, each explaining one of the four
classes the encoder's zero-shot head ranks highest (the true class among them), without class names, and picks
the map of the true class. For a correct prediction the four classes are the top-4 predicted; for a wrong one,
the top-3 wrong classes and the true class (both are the true class plus the three highest-ranked other classes).
Each encoder gets half its cases with a correct and half with a wrong zero-shot prediction (the paper: 5 and 5).

- :mod:`aft_bench.apps.study.cases`: which images and classes make the cases (seeded), and their order.
- :mod:`aft_bench.apps.study.maps`: the four maps of a case (each class's prompt embedding as the target).
- :mod:`aft_bench.apps.study.render`: the pictures of the page (image, maps over the image in grey).
- :mod:`aft_bench.apps.study.page`: the one self-contained HTML page (template, script and style are package data).
- :mod:`aft_bench.apps.study.manifest`: the study's record beside the page: id, cases, answer key, encoders, seed.
- :mod:`aft_bench.apps.study.build`: ``aft-bench study build`` end to end.
- :mod:`aft_bench.apps.study.score`: participants' answer files -> Table 10 (mean and standard deviation over
  participants, correct / incorrect / all cases, against the 25% chance level).
- :mod:`aft_bench.apps.study.arguments`: the ``aft-bench study`` command line.
"""
